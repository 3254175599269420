/* Must NOT build: husai_sae links no MPI, so not even <mpi.h> is on its include path. */
#include <mpi.h>

#include "sae/model.h"

int main(void) {
    return MPI_Init(NULL, NULL);
}
