/* Must NOT build: sae is below sweep, so sweep's headers are not on husai_sae's include path. */
#include "sae/model.h"
#include "sweep/phase.h"

int main(void) {
    return 0;
}
