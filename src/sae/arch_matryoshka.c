/* arch_matryoshka.c: Matryoshka SAE (Bussmann et al. 2025): TopK's code, with the loss averaged over the
 * reconstructions of nested prefixes of the latents, d_sae/2^(n-1), ..., d_sae/2, d_sae, so that early
 * latents learn to reconstruct on their own. The prefixes are the shared kernels' "nested" mode. */
#include "sae/arch.h"
#include "sae/kernels.h"

const husai_arch_ops husai_arch_matryoshka = {
    .name = "matryoshka",
    .nested = 1,
    .select_rows = husai_select_topk_rows,
    .codes = husai_codes_topk,
};
