/* Must NOT build: config is the highest layer without MPI; were MPI linked by it or by anything below it
 * (metrics, sae, common), <mpi.h> would be on its include path and this would build. */
#include <mpi.h>

#include "config/config.h"

int main(void) {
    return MPI_Init(NULL, NULL);
}
