/* Must NOT build: config is below report (report/results.h includes config/config.h, not the reverse). */
#include "config/config.h"
#include "report/results.h"

int main(void) {
    return 0;
}
