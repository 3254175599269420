/* husai version / husai --version: what was built from what, for bug reports and provenance. The
 * libraries report their own versions at run time (the ones actually loaded, which may differ from the
 * headers the build saw); the commit and build type were fixed when CMake configured the build. */
#include <cblas.h>
#include <cjson/cJSON.h>
#include <hdf5.h>
#include <mpi.h>
#include <stdio.h>
#include <string.h>
#include <xxhash.h>

#include "cli/commands.h"
#include "cli/version.h"

int husai_cmd_version(int argc, char **argv) {
    if (argc > 1) {
        if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
            printf("usage: husai --version (or husai version)\n"
                   "Prints husai's version, git commit and build type, and the versions of the MPI, HDF5,\n"
                   "OpenBLAS, cJSON and xxHash libraries it runs with, one per line.\n");
            return 0;
        }
        fprintf(stderr, "husai: error: version: takes no arguments, got '%s' (see husai version --help)\n",
                argv[1]);
        return 2;
    }
    /* MPI_Get_library_version is one of the calls MPI allows before MPI_Init. */
    char mpi[MPI_MAX_LIBRARY_VERSION_STRING];
    int len = 0;
    MPI_Get_library_version(mpi, &len);
    mpi[strcspn(mpi, "\n")] = '\0'; /* Open MPI's first line names it and its version */
    unsigned maj = 0, min = 0, rel = 0;
    H5get_libversion(&maj, &min, &rel);
    const unsigned xxh = XXH_versionNumber();
    printf("husai %s\n", HUSAI_VERSION);
    printf("commit: %s\n", HUSAI_GIT_COMMIT);
    printf("build type: %s\n", HUSAI_BUILD_TYPE);
#if defined(__GNUC__) && !defined(__clang__)
    printf("compiler: GCC %s\n", __VERSION__);
#else
    printf("compiler: %s\n", __VERSION__);
#endif
    printf("MPI: %s\n", mpi);
#ifdef H5_HAVE_PARALLEL
    printf("HDF5: %u.%u.%u (parallel)\n", maj, min, rel);
#else
    printf("HDF5: %u.%u.%u (serial)\n", maj, min, rel);
#endif
    printf("OpenBLAS: %s\n", openblas_get_config());
    printf("cJSON: %s\n", cJSON_Version());
    printf("xxHash: %u.%u.%u\n", xxh / 10000, xxh / 100 % 100, xxh % 100);
    return 0;
}
