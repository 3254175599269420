#define _POSIX_C_SOURCE 200809L
#include "report/h5attr.h"

#include <stdlib.h>
#include <string.h>

herr_t husai_h5_attr_write(hid_t loc, const char *name, hid_t type, const void *value) {
    hid_t space = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(loc, name, type, space, H5P_DEFAULT, H5P_DEFAULT);
    herr_t rc = a < 0 ? -1 : H5Awrite(a, type, value);
    if (a >= 0) H5Aclose(a);
    H5Sclose(space);
    return rc;
}

herr_t husai_h5_attr_write_str(hid_t loc, const char *name, const char *value) {
    hid_t type = H5Tcopy(H5T_C_S1);
    H5Tset_size(type, H5T_VARIABLE);
    H5Tset_cset(type, H5T_CSET_UTF8);
    herr_t rc = husai_h5_attr_write(loc, name, type, &value); /* a variable-length string is its pointer */
    H5Tclose(type);
    return rc;
}

int husai_h5_attr_read(hid_t loc, const char *name, hid_t type, void *value) {
    if (H5Aexists(loc, name) <= 0) return 0;
    hid_t a = H5Aopen(loc, name, H5P_DEFAULT);
    if (a < 0) return 0;
    const int ok = H5Aread(a, type, value) >= 0;
    H5Aclose(a);
    return ok;
}

char *husai_h5_attr_read_str(hid_t loc, const char *name) {
    if (H5Aexists(loc, name) <= 0) return NULL;
    hid_t a = H5Aopen(loc, name, H5P_DEFAULT);
    if (a < 0) return NULL;
    hid_t t = H5Aget_type(a);
    char *s = NULL;
    if (t >= 0 && H5Tget_class(t) == H5T_STRING) {
        hid_t mt = H5Tcopy(H5T_C_S1);
        H5Tset_cset(mt, H5Tget_cset(t));
        if (H5Tis_variable_str(t) > 0) { /* as h5py writes str attributes */
            char *v = NULL;
            H5Tset_size(mt, H5T_VARIABLE);
            if (H5Aread(a, mt, &v) >= 0 && v) {
                s = strdup(v);
                H5free_memory(v);
            }
        } else { /* fixed length: older husai results and other tools */
            const size_t n = H5Tget_size(t);
            s = calloc(n + 1, 1);
            H5Tset_size(mt, n);
            if (s && H5Aread(a, mt, s) < 0) {
                free(s);
                s = NULL;
            }
        }
        H5Tclose(mt);
    }
    if (t >= 0) H5Tclose(t);
    H5Aclose(a);
    return s;
}
