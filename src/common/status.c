#include "common/status.h"

#include <stdarg.h>
#include <stdio.h>

static _Thread_local char g_message[1024];

const char *husai_status_name(husai_status s) {
    switch (s) {
    case HUSAI_OK:
        return "ok";
    case HUSAI_ERR_ARG:
        return "bad argument";
    case HUSAI_ERR_IO:
        return "I/O error";
    case HUSAI_ERR_DATA:
        return "bad data";
    case HUSAI_ERR_NOMEM:
        return "out of memory";
    case HUSAI_ERR_NUMERIC:
        return "numerical failure";
    case HUSAI_STOPPED:
        return "stopped on request";
    }
    return "unknown error";
}

husai_status husai_error(husai_status s, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_message, sizeof g_message, fmt, ap);
    va_end(ap);
    return s;
}

const char *husai_error_message(void) {
    return g_message;
}

void husai_error_clear(void) {
    g_message[0] = '\0';
}
