/* synth.h: synthetic activations with a known dictionary, written in parallel (what `husai synth` runs).
 * Row r is the sum of `active` distinct atoms of a random unit-norm dictionary with coefficients uniform on
 * [0.5, 2), plus N(0, noise^2) per element; a row depends only on (seed, r), so the file is the same for
 * any rank count or chunk size. Written to OUT.partial and renamed to OUT when complete; on any failure
 * nothing is left under either name.
 * defines: husai_synth_spec, husai_synth_write */
#ifndef HUSAI_DATA_SYNTH_H
#define HUSAI_DATA_SYNTH_H

#include <mpi.h>
#include <stdint.h>

#include "common/status.h"

typedef struct {
    uint64_t rows;
    int d_model, atoms, active;
    double noise;
    uint64_t seed;
    int elem;            /* bytes per activation: 2 (float16), 4 (float32) or 8 (float64) */
    uint64_t chunk_rows; /* rows generated and written per collective call and rank; 0: ~32 MiB */
    int force;           /* replace an existing regular file OUT */
    const char *out;
} husai_synth_spec;

/* Collective over comm (every rank passes the same spec): writes spec->out. Returns HUSAI_OK, or an error
 * agreed by every rank with its message set on rank 0 (existing OUT without force, no space, a failed
 * write, ...). */
husai_status husai_synth_write(const husai_synth_spec *spec, MPI_Comm comm);

#endif
