/* Must NOT build: as config_uses_mpi.c, for HDF5: neither config nor any layer below it links HDF5. */
#include <hdf5.h>

#include "config/config.h"

int main(void) {
    return H5open();
}
