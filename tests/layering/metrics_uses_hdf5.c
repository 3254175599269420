/* Must NOT build: husai_metrics links no HDF5, so <hdf5.h> is not on its include path. */
#include <hdf5.h>

#include "metrics/pwmcc.h"

int main(void) {
    return H5open();
}
