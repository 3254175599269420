/* merge.h: joining the run directories of a sweep split into parts (one Slurm array task per value, say)
 * into one run directory. The parts must share every setting but sweep.values, and their data
 * fingerprints. Each condition's metrics depend only on its own seeds' decoders, so they are recomputed
 * from the stored parameters with the same code as a single job: the merged run carries the numbers a
 * single job would. One process, no MPI (the metrics' pairs use the calling thread's OpenMP threads).
 * defines: husai_merge_opts, husai_merge */
#ifndef HUSAI_REPORT_MERGE_H
#define HUSAI_REPORT_MERGE_H

#include <stddef.h>

#include "common/status.h"

typedef struct {
    const char *out;              /* directory that receives the merged run directory */
    const char *run_id;           /* its name, or NULL for <UTC time>-<config hash> as husai sweep */
    int force;                    /* replace an existing run directory of that name */
    const char *command;          /* the command line, for provenance */
    const char *version, *commit; /* of this husai, for provenance */
} husai_merge_opts;

/* Reads parts[0..n_parts), recomputes every condition's metrics and writes the merged run directory
 * (staged, renamed when complete; nothing under the final name on failure). On success sets
 * *n_conditions and the run directory's path in final_path (path_size bytes). */
husai_status husai_merge(const char *const *parts, int n_parts, const husai_merge_opts *o, int *n_conditions,
                         char *final_path, size_t path_size);

#endif
