/* Must NOT build: report and mpi are side by side above config; neither sees the other's headers. */
#include "report/results.h"
#include "mpi/gather.h"

int main(void) {
    return 0;
}
