/* h5attr.h: scalar HDF5 attributes, written and read the one way husai does it everywhere
 * (results.h5, synth files, export and merge read-back).
 * defines: husai_h5_attr_write, husai_h5_attr_write_str, husai_h5_attr_read, husai_h5_attr_read_str */
#ifndef HUSAI_REPORT_H5ATTR_H
#define HUSAI_REPORT_H5ATTR_H

#include <hdf5.h>

/* Writes a scalar attribute of memory type `type` on loc; negative on failure. */
herr_t husai_h5_attr_write(hid_t loc, const char *name, hid_t type, const void *value);

/* Writes a variable-length UTF-8 string attribute (h5py reads it as str, not bytes); negative on failure. */
herr_t husai_h5_attr_write_str(hid_t loc, const char *name, const char *value);

/* Reads a scalar attribute as memory type `type` into *value: 1 when it is there and read, else 0. */
int husai_h5_attr_read(hid_t loc, const char *name, hid_t type, void *value);

/* Reads a string attribute (fixed or variable length, as h5py writes them) into a new string
 * (free it), or NULL when it is absent or not a string. */
char *husai_h5_attr_read_str(hid_t loc, const char *name);

#endif
