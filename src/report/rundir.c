#define _POSIX_C_SOURCE 200809L
#define _XOPEN_SOURCE 700
#include "report/rundir.h"

#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static husai_status mkdir_p(const char *path) {
    char buf[4096];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf)
        return husai_error(HUSAI_ERR_ARG, "output path '%s' is too long", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        if (mkdir(buf, 0777) != 0 && errno != EEXIST)
            return husai_error(HUSAI_ERR_IO, "cannot create output directory '%s': %s", buf, strerror(errno));
        *p = '/';
    }
    if (mkdir(buf, 0777) != 0 && errno != EEXIST)
        return husai_error(HUSAI_ERR_IO, "cannot create output directory '%s': %s", buf, strerror(errno));
    struct stat sb;
    if (stat(buf, &sb) != 0 || !S_ISDIR(sb.st_mode))
        return husai_error(HUSAI_ERR_IO, "output path '%s' is not a directory", buf);
    return HUSAI_OK;
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    return remove(path);
}

static void rm_rf(const char *path) {
    nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

husai_status husai_rundir_begin(husai_rundir *rd, const char *out_dir, const char *run_id, int force,
                                int resume) {
    memset(rd, 0, sizeof *rd);
    husai_status st = mkdir_p(out_dir);
    if (st) return st;
    if (snprintf(rd->final_path, sizeof rd->final_path, "%s/%s", out_dir, run_id) >=
            (int)sizeof rd->final_path ||
        snprintf(rd->staging_path, sizeof rd->staging_path, "%s/.%s.partial", out_dir, run_id) >=
            (int)sizeof rd->staging_path)
        return husai_error(HUSAI_ERR_ARG, "output path '%s' is too long", out_dir);
    if (resume) {
        if (access(rd->final_path, F_OK) == 0)
            return husai_error(HUSAI_ERR_ARG, "run '%s' is already complete; nothing to resume",
                               rd->final_path);
        struct stat sb;
        if (stat(rd->staging_path, &sb) != 0 || !S_ISDIR(sb.st_mode))
            return husai_error(HUSAI_ERR_IO, "nothing to resume: no interrupted run at '%s'",
                               rd->staging_path);
        rd->active = rd->resumed = 1;
        return HUSAI_OK;
    }
    if (!force && access(rd->final_path, F_OK) == 0)
        return husai_error(HUSAI_ERR_IO, "run directory '%s' already exists (use --force to replace it)",
                           rd->final_path);
    if (access(rd->staging_path, F_OK) == 0)
        return husai_error(HUSAI_ERR_IO,
                           "an interrupted run '%s' exists; continue it with --resume %s or remove it",
                           rd->staging_path, rd->final_path);
    char ckpt[4200];
    snprintf(ckpt, sizeof ckpt, "%s/checkpoints", rd->staging_path);
    if (mkdir(rd->staging_path, 0777) != 0 || mkdir(ckpt, 0777) != 0)
        return husai_error(HUSAI_ERR_IO, "cannot write in output directory '%s': %s", out_dir,
                           strerror(errno));
    rd->active = 1;
    return HUSAI_OK;
}

void husai_rundir_default_id(uint64_t config_hash, char *buf, size_t n) {
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    char stamp[32];
    strftime(stamp, sizeof stamp, "%Y%m%dT%H%M%SZ", &tm);
    snprintf(buf, n, "%s-%08llx", stamp, (unsigned long long)(config_hash & 0xffffffffULL));
}

void husai_rundir_command_line(int argc, char **argv, char *buf, size_t n) {
    snprintf(buf, n, "husai");
    for (int i = 0; i < argc; i++) {
        const size_t used = strlen(buf);
        snprintf(buf + used, n - used, " %s", argv[i]);
    }
}

void husai_rundir_path(const husai_rundir *rd, const char *name, char *buf, size_t n) {
    snprintf(buf, n, "%s/%s", rd->staging_path, name);
}

husai_status husai_rundir_commit(husai_rundir *rd, int force) {
    if (force && access(rd->final_path, F_OK) == 0) rm_rf(rd->final_path);
    if (rename(rd->staging_path, rd->final_path) != 0)
        return husai_error(HUSAI_ERR_IO, "cannot rename '%s' to '%s': %s", rd->staging_path, rd->final_path,
                           strerror(errno));
    rd->active = 0;
    return HUSAI_OK;
}

void husai_rundir_remove(const husai_rundir *rd, const char *name) {
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", rd->staging_path, name);
    rm_rf(path);
}

void husai_rundir_abort(husai_rundir *rd) {
    if (!rd || !rd->active || rd->resumed) return;
    rm_rf(rd->staging_path);
    rd->active = 0;
}
