#include "mpi/paramfile.h"

#include <stdio.h>
#include <string.h>

#include "mpi/mpicheck.h"

/* MPI's reason for error code rc. */
static const char *mpi_reason(int rc, char buf[MPI_MAX_ERROR_STRING]) {
    int len = 0;
    if (MPI_Error_string(rc, buf, &len) != MPI_SUCCESS)
        snprintf(buf, MPI_MAX_ERROR_STRING, "MPI error %d", rc);
    return buf;
}

husai_status husai_param_file_open(husai_param_file *pf, MPI_Comm comm, const char *path) {
    memset(pf, 0, sizeof *pf);
    pf->comm = comm;
    snprintf(pf->path, sizeof pf->path, "%s", path);
    char why[MPI_MAX_ERROR_STRING];
    const int rc = MPI_File_open(comm, path, MPI_MODE_RDWR, MPI_INFO_NULL, &pf->fh);
    pf->open = rc == MPI_SUCCESS;
    husai_status st = pf->open
                          ? HUSAI_OK
                          : husai_error(HUSAI_ERR_IO, "cannot open '%s' for the ranks' parameter writes: %s",
                                        path, mpi_reason(rc, why));
    st = husai_mpi_agree(st, comm);
    if (st && pf->open) { /* another rank failed: close together, the file stays rank 0's to delete */
        MPI_File_close(&pf->fh);
        pf->open = 0;
    }
    return st;
}

/* One piece of at most 1 GiB: MPI counts are ints. */
#define PIECE ((size_t)1 << 28)

/* Writes (write = 1) or reads n floats at byte offset `offset`, piece by piece. */
static husai_status transfer(husai_param_file *pf, uint64_t offset, float *buf, size_t n, int write) {
    for (size_t done = 0; done < n;) {
        const int count = (int)(n - done < PIECE ? n - done : PIECE);
        const MPI_Offset at = (MPI_Offset)(offset + done * sizeof(float));
        MPI_Status status;
        int got = 0;
        char why[MPI_MAX_ERROR_STRING];
        const int rc = write ? MPI_File_write_at(pf->fh, at, buf + done, count, MPI_FLOAT, &status)
                             : MPI_File_read_at(pf->fh, at, buf + done, count, MPI_FLOAT, &status);
        if (rc != MPI_SUCCESS)
            return husai_error(HUSAI_ERR_IO, "%s '%s' failed: %s",
                               write ? "writing parameters into" : "reading parameters back from", pf->path,
                               mpi_reason(rc, why));
        MPI_Get_count(&status, MPI_FLOAT, &got);
        if (got != count)
            return husai_error(HUSAI_ERR_IO, "%s '%s' failed: %d of %d floats %s",
                               write ? "writing parameters into" : "reading parameters back from", pf->path,
                               got, count, write ? "written" : "there");
        done += (size_t)count;
    }
    return HUSAI_OK;
}

husai_status husai_param_file_write(husai_param_file *pf, uint64_t offset, const float *data, size_t n) {
    return transfer(pf, offset, (float *)data, n, 1); /* MPI_File_write_at takes a const buffer */
}

husai_status husai_param_file_read(husai_param_file *pf, uint64_t offset, float *out, size_t n) {
    return transfer(pf, offset, out, n, 0);
}

void husai_param_file_sync(husai_param_file *pf) {
    /* MPI-IO's consistency rule for non-atomic mode: sync, barrier, sync. */
    HUSAI_MPI_CHECK(MPI_File_sync(pf->fh));
    HUSAI_MPI_CHECK(MPI_Barrier(pf->comm));
    HUSAI_MPI_CHECK(MPI_File_sync(pf->fh));
}

husai_status husai_param_file_close(husai_param_file *pf) {
    if (!pf->open) return HUSAI_OK;
    char why[MPI_MAX_ERROR_STRING];
    const int rc = MPI_File_close(&pf->fh);
    pf->open = 0;
    return husai_mpi_agree(rc == MPI_SUCCESS ? HUSAI_OK
                                             : husai_error(HUSAI_ERR_IO, "closing '%s' failed: %s", pf->path,
                                                           mpi_reason(rc, why)),
                           pf->comm);
}
