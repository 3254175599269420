/* checkpoint.h: a trainer's complete state on disk, for preemption and exact resume.
 * A checkpoint holds the parameters, Adam moments and step counter, the epoch and the
 * position in it (the epoch's row order is re-derived from (seed, "shuffle", epoch)) and
 * the loss accumulators and the trainer's extra state (sparsity weight, batchtopk threshold, AuxK
 * firing counters), so training continues bit for bit. The file records a format
 * version, the run's config hash, the fingerprint of the data it was trained on
 * (common/fingerprint.h) and the task's identity, ends with a checksum and an end
 * marker, and is written under a temporary name and renamed. A finished task's checkpoint
 * (epoch == epochs) doubles as its result. No MPI here.
 * defines: husai_ckpt_id, husai_checkpoint_save, husai_checkpoint_load, husai_checkpoint_peek_epoch,
 *          husai_checkpoint_peek_data, HUSAI_CKPT_VERSION */
#ifndef HUSAI_SAE_CHECKPOINT_H
#define HUSAI_SAE_CHECKPOINT_H

#include <stdint.h>

#include "common/fingerprint.h"
#include "common/status.h"
#include "sae/train.h"

#define HUSAI_CKPT_VERSION 3 /* 3: the data fingerprint */

/* What a checkpoint must match to be accepted. */
typedef struct {
    uint64_t config_hash;
    char task[96];              /* e.g. "search/k=4 seed=42" */
    char data_fp[HUSAI_FP_LEN]; /* the training data's fingerprint, "xxh3:..." */
} husai_ckpt_id;

/* Writes t's state to path atomically (path.tmp, fsync, rename). */
husai_status husai_checkpoint_save(const husai_trainer *t, const husai_ckpt_id *id, const char *path);

/* Restores a checkpoint into t, which husai_trainer_init has prepared with the same data and options.
 * Refuses (HUSAI_ERR_DATA, message naming the file and the mismatch) a truncated or corrupt file, another
 * format version, another config, other data (fingerprint), another task or other shapes. HUSAI_ERR_IO if
 * the file is missing. */
husai_status husai_checkpoint_load(husai_trainer *t, const husai_ckpt_id *id, const char *path);

/* Reads only the epoch a checkpoint has reached (where a streamed task rejoins the chunk schedule);
 * HUSAI_ERR_IO if missing, HUSAI_ERR_DATA if the header is unreadable. Not a validation: load is. */
husai_status husai_checkpoint_peek_epoch(const char *path, int *epoch);

/* Reads only the fingerprint of the data a checkpoint was trained on into fp (what --resume compares
 * before any training); HUSAI_ERR_IO if missing, HUSAI_ERR_DATA if the header is unreadable or of
 * another version. Not a validation: load is. */
husai_status husai_checkpoint_peek_data(const char *path, char fp[HUSAI_FP_LEN]);

#endif
