/* arch_topk.c: TopK (Gao et al. 2024, HUSAI's recipe): each row keeps its k largest pre-activations,
 * signed (ties to the lower latent, NaN as -inf); with spec.relu the non-positive picks are dropped. */
#include "sae/arch.h"
#include "sae/kernels.h"

const husai_arch_ops husai_arch_topk = {
    .name = "topk",
    .select_rows = husai_select_topk_rows,
    .codes = husai_codes_topk,
};
