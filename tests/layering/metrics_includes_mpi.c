/* Must NOT build: metrics is below mpi, so mpi's headers are not on husai_metrics's include path. */
#include "metrics/pwmcc.h"
#include "mpi/mpicheck.h"

int main(void) {
    return 0;
}
