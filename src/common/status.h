/* status.h: husai's error model.
 * Library functions return a husai_status and never exit; the detail (which file,
 * which key, which row) goes into a per-thread message that the program's edge prints.
 * defines: husai_status, husai_status_name, husai_error, husai_error_message, husai_error_clear */
#ifndef HUSAI_STATUS_H
#define HUSAI_STATUS_H

typedef enum {
    HUSAI_OK = 0,
    HUSAI_ERR_ARG,     /* bad argument or configuration value */
    HUSAI_ERR_IO,      /* file missing, unreadable or unwritable */
    HUSAI_ERR_DATA,    /* data has the wrong shape, dtype or non-finite values */
    HUSAI_ERR_NOMEM,   /* allocation failed */
    HUSAI_ERR_NUMERIC, /* training diverged (NaN/Inf loss) */
    HUSAI_STOPPED      /* not an error: stopped on request after checkpointing; resume later */
} husai_status;

/* Returns a short fixed name for a status ("bad argument", ...); never NULL. */
const char *husai_status_name(husai_status s);

/* Records a printf-style detail message for the calling thread and returns s, so
 * callers can write `return husai_error(HUSAI_ERR_ARG, "k=%d > d_sae=%d", k, d)`. */
husai_status husai_error(husai_status s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Returns the calling thread's last detail message ("" if none); valid until the next husai_error. */
const char *husai_error_message(void);

/* Forgets the calling thread's detail message. */
void husai_error_clear(void);

#endif
