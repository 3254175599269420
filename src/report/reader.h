/* reader.h: a finished run directory read back into the structures results.c writes from, so `husai
 * report` regenerates summary.md, conditions.csv, the plots and report.html with the very code a sweep
 * used. Numbers come from results.json (written so every double reads back bit for bit; null is a
 * withheld interval, read as NaN), the config from its "config" text, and what results.json does not
 * hold (seeds as exact 64-bit integers, the S x S PWMCC matrices, the per-latent densities) from
 * results.h5. No MPI.
 * defines: husai_run_read, husai_run_read_dir, husai_run_read_free, husai_report_regenerate */
#ifndef HUSAI_REPORT_READER_H
#define HUSAI_REPORT_READER_H

#include "common/status.h"
#include "config/config.h"
#include "report/results.h"

typedef struct {
    husai_config cfg;
    husai_run_info run; /* its strings point into the fields below */
    char id[256], version[64], commit[64], command[4096], hosts[8192], dtype[16], fingerprint[96];
    husai_condition_result *c; /* (n), each with its own seeds array */
    int n;
    int has_proto;
    husai_protocol_result proto;
} husai_run_read;

/* Reads run directory dir into *r (zeroed first; free it with husai_run_read_free even on failure).
 * A missing or malformed file or key is one error naming the file and the key. */
husai_status husai_run_read_dir(husai_run_read *r, const char *dir);

/* Releases what husai_run_read_dir allocated; safe twice. */
void husai_run_read_free(husai_run_read *r);

/* Reads run_dir and writes its reports (husai_results_reports) into out_dir (run_dir itself when NULL):
 * first into a hidden staging directory inside out_dir, then renamed over the old files one by one, so
 * a failure leaves the old files, never a half-written one. */
husai_status husai_report_regenerate(const char *run_dir, const char *out_dir);

#endif
