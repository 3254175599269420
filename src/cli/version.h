/* version.h: the version and git commit the build stamps into provenance (CMake defines both;
 * the fallbacks keep a hand-compiled file honest about not knowing).
 * defines: HUSAI_VERSION, HUSAI_GIT_COMMIT */
#ifndef HUSAI_CLI_VERSION_H
#define HUSAI_CLI_VERSION_H

#ifndef HUSAI_VERSION
#define HUSAI_VERSION "0.0.0"
#endif
#ifndef HUSAI_GIT_COMMIT
#define HUSAI_GIT_COMMIT "unknown"
#endif

#endif
