/* rundir.h: a run directory that appears only when complete.
 * Files are written into a hidden staging directory `<out>/.<run_id>.partial` which is
 * renamed to `<out>/<run_id>` at the end; a failed run removes the staging directory, so
 * nothing that looks complete is ever left behind. Rank 0 only.
 * defines: husai_rundir, husai_rundir_begin, husai_rundir_path, husai_rundir_commit, husai_rundir_abort,
 *          husai_rundir_remove, husai_rundir_default_id, husai_rundir_command_line */
#ifndef HUSAI_REPORT_RUNDIR_H
#define HUSAI_REPORT_RUNDIR_H

#include <stddef.h>
#include <stdint.h>

#include "common/status.h"

typedef struct {
    char final_path[4096];
    char staging_path[4096];
    int active;
    int resumed; /* staging came from an earlier, interrupted run: never delete it on failure */
} husai_rundir;

/* Creates out_dir (and parents) if needed and the staging directory with its checkpoints/ folder;
 * refuses if the final directory already exists unless force is set (then it is replaced at commit).
 * With resume, the staging directory of an interrupted run must exist and is reused as it is. */
husai_status husai_rundir_begin(husai_rundir *rd, const char *out_dir, const char *run_id, int force,
                                int resume);

/* Removes one entry (file or directory tree) of the staging directory. */
void husai_rundir_remove(const husai_rundir *rd, const char *name);

/* Writes the default run id "<UTC yyyymmddThhmmssZ>-<low 32 bits of the config hash in hex>" into buf. */
void husai_rundir_default_id(uint64_t config_hash, char *buf, size_t n);

/* Writes "husai" and the arguments, space-separated, into buf (provenance for results.json). */
void husai_rundir_command_line(int argc, char **argv, char *buf, size_t n);

/* Writes "<staging>/<name>" into buf; the file lands in the run directory at commit. */
void husai_rundir_path(const husai_rundir *rd, const char *name, char *buf, size_t n);

/* Renames staging to the final name (after removing an old run of that name when forced). */
husai_status husai_rundir_commit(husai_rundir *rd, int force);

/* Removes the staging directory and everything in it, unless it was resumed (its checkpoints are
 * an interrupted run's work); harmless if nothing was begun. */
void husai_rundir_abort(husai_rundir *rd);

#endif
