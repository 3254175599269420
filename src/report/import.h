/* import.h: activations held as .npy arrays or safetensors files (one or many shards) converted into one
 * chunked float32 HDF5 dataset, the layout `husai sweep` reads. The inputs are checked in full (headers,
 * dtypes, widths, sizes) before anything is written; rows then stream through a fixed buffer (never a
 * whole input in memory) into a staging file that is renamed over the output only when complete, so an
 * error leaves nothing under the output's name. It lives in `report` because it writes HDF5 serially and
 * calls no MPI, like results.h5: `mpi` is the parallel reading side.
 * defines: husai_import_opts, husai_import_summary, husai_import */
#ifndef HUSAI_REPORT_IMPORT_H
#define HUSAI_REPORT_IMPORT_H

#include <stddef.h>

#include "common/status.h"

typedef struct {
    const char *dataset;    /* dataset path in the output, e.g. "/activations" */
    const char *tensor;     /* safetensors: the tensor to take; NULL: the only one of rank >= 2 */
    const char *model_name; /* recorded as attributes of the dataset when not NULL */
    const char *hook_name;
    size_t chunk_rows; /* rows per HDF5 storage chunk; 0: about 1 MiB */
    int force;         /* replace an existing output (a regular file only) */
} husai_import_opts;

typedef struct {
    size_t rows, chunk_rows;
    int d_model;
} husai_import_summary;

/* Converts inputs[0..n) (.npy little-endian float32/float16 in C order, rank >= 2, leading axes taken
 * as rows; safetensors F32/F16/BF16) into dataset o->dataset of the new HDF5 file out, rows in input
 * order, with attributes model_name, hook_name, source_files and source_rows. Refuses (one message naming
 * the file and problem) unknown formats, bad headers, other dtypes, Fortran order, differing widths,
 * truncated files and NaN/Inf values; on any error nothing is left under out. */
husai_status husai_import(const char *out, const char *const *inputs, int n, const husai_import_opts *o,
                          husai_import_summary *summary);

#endif
