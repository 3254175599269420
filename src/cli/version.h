/* version.h: the version, git commit and build type the build stamps into provenance (CMake defines them;
 * the fallbacks keep a hand-compiled file honest about not knowing).
 * defines: HUSAI_VERSION, HUSAI_GIT_COMMIT, HUSAI_BUILD_TYPE */
#ifndef HUSAI_CLI_VERSION_H
#define HUSAI_CLI_VERSION_H

#ifndef HUSAI_VERSION
#define HUSAI_VERSION "0.0.0"
#endif
#ifndef HUSAI_GIT_COMMIT
#define HUSAI_GIT_COMMIT "unknown"
#endif

#ifndef HUSAI_BUILD_TYPE
#define HUSAI_BUILD_TYPE "unknown"
#endif

#endif
