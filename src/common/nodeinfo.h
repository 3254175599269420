/* nodeinfo.h: what a job looked like node by node (for the log and results.json).
 * defines: husai_node_info */
#ifndef HUSAI_COMMON_NODEINFO_H
#define HUSAI_COMMON_NODEINFO_H

typedef struct {
    char host[64];     /* the node's processor name */
    int ranks;         /* ranks on the node (one shared-memory domain) */
    double bytes_read; /* bytes of the dataset this node read from the file */
    double bytes_held; /* bytes of the dataset held in the node's shared memory (one copy per node) */
} husai_node_info;

#endif
