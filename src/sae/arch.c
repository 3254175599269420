/* arch.c: the registry of SAE architectures and their config names. */
#include "sae/arch.h"

#include <string.h>

const husai_arch_ops *const husai_arch_registry[HUSAI_ARCH_COUNT] = {
    [HUSAI_ARCH_TOPK] = &husai_arch_topk,
    [HUSAI_ARCH_BATCHTOPK] = &husai_arch_batchtopk,
    [HUSAI_ARCH_JUMPRELU] = &husai_arch_jumprelu,
    [HUSAI_ARCH_RELU_L1] = &husai_arch_relu_l1,
    [HUSAI_ARCH_MATRYOSHKA] = &husai_arch_matryoshka,
};

const husai_arch_ops *husai_arch_ops_of(const husai_sae_spec *spec) {
    if (spec->ops) return spec->ops;
    return spec->arch >= 0 && spec->arch < HUSAI_ARCH_COUNT ? husai_arch_registry[spec->arch] : NULL;
}

const char *husai_arch_name(int arch) {
    return arch >= 0 && arch < HUSAI_ARCH_COUNT ? husai_arch_registry[arch]->name : "?";
}

int husai_arch_parse(const char *name) {
    for (int a = 0; a < HUSAI_ARCH_COUNT; a++)
        if (!strcmp(name, husai_arch_registry[a]->name)) return a;
    return -1;
}
