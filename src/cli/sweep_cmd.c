/* sweep_cmd.c: `husai sweep`, the program's MPI edge: parses the arguments and the configuration, sets
 * up stops and threads, prints the resolved configuration, then hands the run to the engine
 * (sweep/run.h: run directory, dataset, protocol, results) and says its agreed error once. A stop on any
 * rank reaches all (stop.h). */
#include <getopt.h>
#include <limits.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/suggest.h"
#include "cli/commands.h"
#include "cli/threads.h"
#include "cli/version.h"
#include "common/parse.h"
#include "config/config.h"
#include "mpi/mpicheck.h"
#include "mpi/stop.h"
#include "report/rundir.h"
#include "sweep/run.h"

typedef struct {
    const char *config_path;
    const char *out_dir; /* NULL: from the config */
    int force;
    int reverse_order;
    const char *resume; /* run directory to continue, or NULL */
    const char *run_id; /* explicit run id (e.g. the Slurm job), or NULL */
    long stop_after;    /* test hook: stop after this many steps on each rank */
    int n_sets;
    char **sets;
} sweep_args;

static void sweep_usage(FILE *f) {
    fprintf(
        f,
        "usage: husai sweep CONFIG.ini [--set section.key=value ...] [--out DIR] [--force]\n"
        "                  [--run-id ID] [--resume RUN_DIR]\n"
        "  -s, --set S.K=V  override one config key (repeatable)\n"
        "  -o, --out DIR    write the run directory under DIR (overrides [output] dir)\n"
        "  -f, --force      replace an existing run directory of the same id\n"
        "  --run-id ID      name the run directory ID instead of <UTC time>-<config hash>\n"
        "  --resume RUN_DIR continue an interrupted run (same config; any number of ranks)\n"
        "  --task-order forward|reverse  order in which each rank runs its tasks (results do not change)\n"
        "  --stop-after-steps N  (testing) stop as if signalled after N optimizer steps per rank\n"
        "  -h, --help       print this help\n"
        "SIGTERM or SIGUSR1 checkpoints every task in progress and exits with status %d.\n"
        "Run under MPI: mpirun -np N husai sweep CONFIG.ini\n",
        HUSAI_EXIT_STOPPED);
}

/* Returns 0 to go on, or an exit status (0 for --help). Every rank parses the same argv. */
static int parse_args(int argc, char **argv, sweep_args *a, int rank) {
    static const struct option longopts[] = {{"set", required_argument, NULL, 's'},
                                             {"out", required_argument, NULL, 'o'},
                                             {"force", no_argument, NULL, 'f'},
                                             {"task-order", required_argument, NULL, 't'},
                                             {"resume", required_argument, NULL, 'r'},
                                             {"run-id", required_argument, NULL, 'i'},
                                             {"stop-after-steps", required_argument, NULL, 'S'},
                                             {"help", no_argument, NULL, 'h'},
                                             {NULL, 0, NULL, 0}};
    memset(a, 0, sizeof *a);
    a->sets = calloc((size_t)argc, sizeof(char *));
    optind = 1;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, "s:o:fh", longopts, NULL)) != -1) {
        switch (c) {
        case 's':
            a->sets[a->n_sets++] = optarg;
            break;
        case 'o':
            a->out_dir = optarg;
            break;
        case 'f':
            a->force = 1;
            break;
        case 'r':
            a->resume = optarg;
            break;
        case 'i':
            a->run_id = optarg;
            break;
        case 'S': {
            long long n;
            if (husai_parse_int("--stop-after-steps", optarg, 1, LONG_MAX, &n)) {
                if (rank == 0) fprintf(stderr, "husai sweep: %s\n", husai_error_message());
                return 2;
            }
            a->stop_after = (long)n;
            break;
        }
        case 't':
            if (!strcmp(optarg, "reverse"))
                a->reverse_order = 1;
            else if (strcmp(optarg, "forward")) {
                if (rank == 0) fprintf(stderr, "husai sweep: --task-order must be forward or reverse\n");
                return 2;
            }
            break;
        case 'h':
            if (rank == 0) sweep_usage(stdout);
            return -1;
        default:
            if (rank == 0) husai_cli_option_error("sweep", argv, "s:o:fh", longopts);
            return 2;
        }
    }
    if (optind != argc - 1) {
        if (rank == 0) {
            fprintf(stderr, "husai sweep: expected exactly one CONFIG file\n");
            sweep_usage(stderr);
        }
        return 2;
    }
    a->config_path = argv[optind];
    return 0;
}

static void print_config(const husai_config *cfg, int size, const char *hosts) {
    printf("[husai] husai %s (%s): mode %s over %s, %d value(s) x %d seed(s) on %d rank(s); hosts: %s\n",
           HUSAI_VERSION, HUSAI_GIT_COMMIT, husai_mode_name(cfg->mode), cfg->param, cfg->n_values,
           cfg->n_seeds, size, hosts);
    printf("[husai] resolved configuration:\n");
    husai_config_print(cfg, stdout);
    printf("\n");
    fflush(stdout);
}

/* Comma-separated distinct processor names of all ranks (collective; result valid on root). */
static void gather_hosts(char *out, size_t n, int *n_hosts, MPI_Comm comm) {
    int rank, size;
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &size);
    char mine[MPI_MAX_PROCESSOR_NAME] = {0};
    int len;
    MPI_Get_processor_name(mine, &len);
    char *all = rank == 0 ? calloc((size_t)size, MPI_MAX_PROCESSOR_NAME) : NULL;
    if (rank == 0 && !all) husai_mpi_die("out of memory");
    HUSAI_MPI_CHECK(
        MPI_Gather(mine, MPI_MAX_PROCESSOR_NAME, MPI_CHAR, all, MPI_MAX_PROCESSOR_NAME, MPI_CHAR, 0, comm));
    if (rank != 0) return;
    out[0] = '\0';
    *n_hosts = 0;
    for (int q = 0; q < size; q++) {
        const char *h = all + (size_t)q * MPI_MAX_PROCESSOR_NAME;
        int seen = 0;
        for (int p = 0; p < q && !seen; p++)
            seen = !strcmp(h, all + (size_t)p * MPI_MAX_PROCESSOR_NAME);
        if (seen) continue;
        size_t used = strlen(out);
        snprintf(out + used, n - used, "%s%s", *n_hosts ? "," : "", h);
        (*n_hosts)++;
    }
    free(all);
}

/* What the command line holds beside the run it hands to the engine. */
typedef struct {
    sweep_args args;
    char command[4096]; /* the command line as given, for provenance (getopt may permute argv) */
    char resume_out[HUSAI_PATH_MAX];
    char hosts[8192];
    husai_sweep run;
} sweep_cmd;

/* --resume RUN_DIR names both the output directory and the run id (".ID.partial" or "ID"). */
static husai_status resume_target(sweep_cmd *s) {
    char tmp[HUSAI_PATH_MAX], *id = s->run.resume_id;
    const size_t id_size = sizeof s->run.resume_id;
    snprintf(tmp, sizeof tmp, "%s", s->args.resume);
    size_t len = strlen(tmp);
    while (len > 1 && tmp[len - 1] == '/')
        tmp[--len] = '\0';
    char *slash = strrchr(tmp, '/');
    const char *base = slash ? slash + 1 : tmp;
    if (slash) {
        *slash = '\0';
        snprintf(s->resume_out, sizeof s->resume_out, "%s", slash == tmp ? "/" : tmp);
    } else {
        snprintf(s->resume_out, sizeof s->resume_out, ".");
    }
    snprintf(id, id_size, "%s", base[0] == '.' ? base + 1 : base);
    len = strlen(id);
    if (len > 8 && !strcmp(id + len - 8, ".partial")) id[len - 8] = '\0';
    if (!*id)
        return husai_error(HUSAI_ERR_ARG, "--resume '%s' does not name a run directory", s->args.resume);
    s->args.out_dir = s->resume_out;
    return HUSAI_OK;
}

/* Every rank parses the same inputs, so every rank reaches the same verdict without talking. */
static husai_status load_config(sweep_cmd *s) {
    husai_config *cfg = &s->run.cfg;
    husai_status st = s->args.resume ? resume_target(s) : HUSAI_OK;
    if (!st)
        st = husai_config_resolve(cfg, s->args.config_path, (const char *const *)s->args.sets, s->args.n_sets,
                                  s->args.out_dir);
    free(s->args.sets);
    s->args.sets = NULL;
    if (st) return st;
    s->run.config_hash = husai_config_hash(cfg);
    if (s->args.resume && s->args.run_id)
        return husai_error(HUSAI_ERR_ARG,
                           "--resume and --run-id exclude each other (the run id comes from RUN_DIR)");
    return HUSAI_OK;
}

/* Hands the engine the command line's choices and provenance. */
static void describe_run(sweep_cmd *s) {
    husai_sweep *r = &s->run;
    r->config_path = s->args.config_path;
    r->resume = s->args.resume;
    r->run_id_arg = s->args.run_id;
    r->force = s->args.force;
    r->reverse_order = s->args.reverse_order;
    r->version = HUSAI_VERSION;
    r->commit = HUSAI_GIT_COMMIT;
    r->command = s->command;
    r->hosts = s->hosts;
}

/* The command, as a list of steps; each failure is agreed by every rank before it gets here, so all
 * ranks leave by the same path. */
static int sweep(int argc, char **argv, sweep_cmd *s) {
    husai_sweep *r = &s->run;
    r->comm = MPI_COMM_WORLD;
    MPI_Comm_rank(r->comm, &r->rank);
    MPI_Comm_size(r->comm, &r->size);
    r->t_begin = MPI_Wtime();
    husai_rundir_command_line(argc, argv, s->command, sizeof s->command);
    const int rc = parse_args(argc, argv, &s->args, r->rank);
    if (rc) {
        free(s->args.sets);
        return rc < 0 ? 0 : rc;
    }
    husai_status st;
    if ((st = load_config(s))) goto out;
    husai_stop_install();
    husai_stop_after_steps(s->args.stop_after);
    /* Threads per rank (HUSAI_THREADS, default 1) split each SAE's step, the encoder's sgemm included,
     * in ways that leave every seed's bits unchanged; OpenBLAS runs one thread inside each. */
    r->threads = 1;
    if ((st = husai_threads_setup(r->comm, &r->threads))) goto out;
    r->n_hosts = 1;
    gather_hosts(s->hosts, sizeof s->hosts, &r->n_hosts, r->comm);
    if (r->rank == 0) print_config(&r->cfg, r->size, s->hosts);
    describe_run(s);
    st = husai_sweep_run(r);
out:
    husai_sweep_release(r);
    if (r->stopped) return HUSAI_EXIT_STOPPED;
    if (!st) return 0;
    if (r->rank == 0) fprintf(stderr, "husai: error: %s\n", husai_error_message());
    husai_sweep_discard(r);
    return 1;
}

int husai_cmd_sweep(int argc, char **argv) {
    /* Open before anything can stop, closed on every way out: a stop on any rank reaches all. */
    husai_stop_connect(MPI_COMM_WORLD);
    sweep_cmd *s = calloc(1, sizeof *s);
    if (!s) husai_mpi_die("out of memory");
    const int rc = sweep(argc, argv, s);
    free(s);
    husai_sweep_unlock();
    husai_stop_disconnect();
    return rc;
}
