/* Tensor files: scalar attributes (string, int64, double) on the root group, a group or a
 * dataset (API in weft/tensor_file.h).
 *
 * Strings are stored as variable-length UTF-8 scalars, which h5py returns as str and which
 * have no length limit chosen up front; readers also accept fixed-length strings, as written
 * by other tools. Integers are stored as little-endian int64, numbers as IEEE double.
 *
 * Attribute writes are HDF5 metadata operations, collective on a collective file: every rank
 * writes the same value, and the ranks agree on the value (weft_tf_agree hashes it) before
 * HDF5 sees it, since diverging metadata corrupts the file silently. Reads are independent:
 * any subset of ranks may read. An existing attribute is deleted and recreated, so its type
 * can change; rejected: H5Awrite into the existing one, which fails on a type change. */
#include <stdlib.h>
#include <string.h>

#include "tensor_file_internal.h"
#include "weft/check.h"

typedef enum tf_attr_kind {
  TF_ATTR_STR = 0,
  TF_ATTR_I64 = 1,
  TF_ATTR_F64 = 2,
} tf_attr_kind_t;

static const char *tf_class_name(H5T_class_t cls) {
  switch (cls) {
  case H5T_INTEGER: return "an integer";
  case H5T_FLOAT: return "a float";
  case H5T_STRING: return "a string";
  default: return "a compound or other non-scalar type";
  }
}

static weft_status_t tf_attr_name_check(const weft_tensor_file_t *file, const char *object,
                                        const char *name) {
  if (!name || !name[0])
    return weft_tf_error(WEFT_ERR_INVALID_ARG, file->path, object, "empty attribute name");
  return WEFT_OK;
}

/* Creates attribute `name` on `object` (normalised) with the value, replacing an old one. */
static weft_status_t tf_attr_write_raw(weft_tensor_file_t *file, const char *object,
                                       const char *name, tf_attr_kind_t kind, const void *value) {
  weft_status_t st = WEFT_OK;
  hid_t type = H5I_INVALID_HID, space = H5I_INVALID_HID, attr = H5I_INVALID_HID;
  htri_t exists = H5Aexists_by_name(file->fid, object, name, H5P_DEFAULT);
  if (exists < 0 || (exists && H5Adelete_by_name(file->fid, object, name, H5P_DEFAULT) < 0)) {
    st = weft_tf_h5_error(WEFT_ERR_IO, file->path, object, "cannot replace attribute '%s'", name);
    goto done;
  }
  const void *buf = value;
  if (kind == TF_ATTR_STR) {
    type = H5Tcopy(H5T_C_S1);
    if (type < 0 || H5Tset_size(type, H5T_VARIABLE) < 0 || H5Tset_cset(type, H5T_CSET_UTF8) < 0) {
      st = weft_tf_h5_error(WEFT_ERR_IO, file->path, object, "cannot make a string type");
      goto done;
    }
    buf = &value; /* a variable-length string is passed as a pointer to the char pointer */
  } else {
    type = H5Tcopy(kind == TF_ATTR_I64 ? H5T_STD_I64LE : H5T_IEEE_F64LE);
  }
  space = H5Screate(H5S_SCALAR);
  if (type >= 0 && space >= 0)
    attr = H5Acreate_by_name(file->fid, object, name, type, space, H5P_DEFAULT, H5P_DEFAULT,
                             H5P_DEFAULT);
  if (attr < 0 || H5Awrite(attr, type, buf) < 0)
    st = weft_tf_h5_error(WEFT_ERR_IO, file->path, object, "cannot write attribute '%s'", name);
done:
  if (attr >= 0) H5Aclose(attr);
  if (space >= 0) H5Sclose(space);
  if (type >= 0) H5Tclose(type);
  return st;
}

weft_status_t weft_tf_attr_write_str_local(weft_tensor_file_t *file, const char *object,
                                           const char *name, const char *value) {
  return tf_attr_write_raw(file, object, name, TF_ATTR_STR, value);
}

static weft_status_t tf_attr_write(weft_tensor_file_t *file, const char *object_in,
                                   const char *name, tf_attr_kind_t kind, const void *value) {
  char object[WEFT_TF_PATH_MAX];
  weft_status_t st = weft_tf_normalize(file, object_in ? object_in : "/", true, object);
  const char *where = st == WEFT_OK ? object : object_in;
  if (st == WEFT_OK) st = tf_attr_name_check(file, where, name);
  if (st == WEFT_OK && !file->writable)
    st = weft_tf_error(WEFT_ERR_INVALID_ARG, file->path, where,
                       "cannot write attribute '%s': the file is open read-only", name);
  if (st == WEFT_OK && kind == TF_ATTR_STR && !value)
    st = weft_tf_error(WEFT_ERR_INVALID_ARG, file->path, where, "attribute '%s' value is NULL",
                       name);
  if (st == WEFT_OK && strcmp(object, "/") != 0 && strcmp(name, "dtype") == 0)
    st = weft_tf_error(WEFT_ERR_INVALID_ARG, file->path, where,
                       "attribute name 'dtype' is reserved for the stored dtype");
  bool exists = false;
  if (st == WEFT_OK) st = weft_tf_link_exists(file, object, &exists);
  if (st == WEFT_OK && !exists)
    st = weft_tf_error(WEFT_ERR_INVALID_ARG, file->path, where,
                       "cannot write attribute '%s': no such dataset or group", name);
  uint64_t key = 0;
  if (st == WEFT_OK) {
    key = weft_tf_hash(WEFT_TF_HASH_INIT, object, strlen(object));
    key = weft_tf_hash(key, name, strlen(name) + 1);
    key = weft_tf_hash(key, &kind, sizeof kind);
    key = kind == TF_ATTR_STR ? weft_tf_hash(key, value, strlen(value)) /* the text */
                              : weft_tf_hash(key, value, 8);            /* int64 or double */
  }
  WEFT_CHECK(weft_tf_agree(file, st, key, where, "attribute write"));
  st = tf_attr_write_raw(file, object, name, kind, value);
  return weft_tf_agree(file, st, key, object, "attribute write");
}

weft_status_t weft_tensor_file_attr_write_str(weft_tensor_file_t *file, const char *object,
                                              const char *name, const char *value) {
  return tf_attr_write(file, object, name, TF_ATTR_STR, value);
}

weft_status_t weft_tensor_file_attr_write_i64(weft_tensor_file_t *file, const char *object,
                                              const char *name, int64_t value) {
  return tf_attr_write(file, object, name, TF_ATTR_I64, &value);
}

weft_status_t weft_tensor_file_attr_write_f64(weft_tensor_file_t *file, const char *object,
                                              const char *name, double value) {
  return tf_attr_write(file, object, name, TF_ATTR_F64, &value);
}

weft_status_t weft_tensor_file_attr_exists(weft_tensor_file_t *file, const char *object_in,
                                           const char *name, bool *exists_p) {
  char object[WEFT_TF_PATH_MAX];
  *exists_p = false;
  WEFT_CHECK(weft_tf_normalize(file, object_in ? object_in : "/", true, object));
  WEFT_CHECK(tf_attr_name_check(file, object, name));
  bool link = false;
  WEFT_CHECK(weft_tf_link_exists(file, object, &link));
  if (!link) return WEFT_OK;
  htri_t found = H5Aexists_by_name(file->fid, object, name, H5P_DEFAULT);
  if (found < 0)
    return weft_tf_h5_error(WEFT_ERR_IO, file->path, object, "cannot look up attribute '%s'", name);
  *exists_p = found > 0;
  return WEFT_OK;
}

/* Opens attribute `name` of `object_in` holding one value of class `cls`; the file type is
 * returned in *type_p (the caller closes both). */
static weft_status_t tf_attr_open(weft_tensor_file_t *file, const char *object_in, const char *name,
                                  H5T_class_t cls, hid_t *attr_p, hid_t *type_p) {
  char object[WEFT_TF_PATH_MAX];
  *attr_p = *type_p = H5I_INVALID_HID;
  WEFT_CHECK(weft_tf_normalize(file, object_in ? object_in : "/", true, object));
  WEFT_CHECK(tf_attr_name_check(file, object, name));
  bool exists = false;
  WEFT_CHECK(weft_tensor_file_attr_exists(file, object, name, &exists));
  if (!exists)
    return weft_tf_error(WEFT_ERR_INVALID_ARG, file->path, object, "no attribute '%s'", name);
  weft_status_t st = WEFT_OK;
  hid_t space = H5I_INVALID_HID;
  hid_t attr = H5Aopen_by_name(file->fid, object, name, H5P_DEFAULT, H5P_DEFAULT);
  hid_t type = attr >= 0 ? H5Aget_type(attr) : H5I_INVALID_HID;
  if (type >= 0) space = H5Aget_space(attr);
  if (space < 0) {
    st = weft_tf_h5_error(WEFT_ERR_IO, file->path, object, "cannot open attribute '%s'", name);
    goto done;
  }
  H5T_class_t have = H5Tget_class(type);
  hssize_t npoints = H5Sget_simple_extent_npoints(space);
  if (have != cls)
    st = weft_tf_error(WEFT_ERR_INVALID_ARG, file->path, object, "attribute '%s' is %s, not %s",
                       name, tf_class_name(have), tf_class_name(cls));
  else if (npoints != 1)
    st = weft_tf_error(WEFT_ERR_INVALID_ARG, file->path, object,
                       "attribute '%s' holds %lld values, not one", name, (long long)npoints);
done:
  if (space >= 0) H5Sclose(space);
  if (st != WEFT_OK) {
    if (type >= 0) H5Tclose(type);
    if (attr >= 0) H5Aclose(attr);
    return st;
  }
  *attr_p = attr;
  *type_p = type;
  return WEFT_OK;
}

/* Reads one number of native type `mem` from an attribute of class `cls`. */
static weft_status_t tf_attr_read_number(weft_tensor_file_t *file, const char *object,
                                         const char *name, H5T_class_t cls, hid_t mem,
                                         void *value_p) {
  hid_t attr, type;
  WEFT_CHECK(tf_attr_open(file, object, name, cls, &attr, &type));
  weft_status_t st = WEFT_OK;
  if (H5Aread(attr, mem, value_p) < 0)
    st = weft_tf_h5_error(WEFT_ERR_IO, file->path, object ? object : "/",
                          "cannot read attribute '%s'", name);
  H5Tclose(type);
  H5Aclose(attr);
  return st;
}

weft_status_t weft_tensor_file_attr_read_i64(weft_tensor_file_t *file, const char *object,
                                             const char *name, int64_t *value_p) {
  return tf_attr_read_number(file, object, name, H5T_INTEGER, H5T_NATIVE_INT64, value_p);
}

weft_status_t weft_tensor_file_attr_read_f64(weft_tensor_file_t *file, const char *object,
                                             const char *name, double *value_p) {
  return tf_attr_read_number(file, object, name, H5T_FLOAT, H5T_NATIVE_DOUBLE, value_p);
}

weft_status_t weft_tensor_file_attr_read_str(weft_tensor_file_t *file, const char *object,
                                             const char *name, char **value_p) {
  hid_t attr, type, mem = H5I_INVALID_HID;
  *value_p = NULL;
  WEFT_CHECK(tf_attr_open(file, object, name, H5T_STRING, &attr, &type));
  const char *where = object ? object : "/";
  weft_status_t st = WEFT_OK;
  char *copy = NULL;
  htri_t variable = H5Tis_variable_str(type);
  if (variable > 0) {
    /* Same character set as the file: HDF5 does not convert between ASCII and UTF-8. */
    char *text = NULL;
    mem = H5Tcopy(H5T_C_S1);
    if (mem < 0 || H5Tset_size(mem, H5T_VARIABLE) < 0 || H5Tset_cset(mem, H5Tget_cset(type)) < 0 ||
        H5Aread(attr, mem, &text) < 0) {
      st = weft_tf_h5_error(WEFT_ERR_IO, file->path, where, "cannot read attribute '%s'", name);
      goto done;
    }
    copy = strdup(text ? text : "");
    H5free_memory(text);
  } else if (variable == 0) {
    size_t size = H5Tget_size(type);
    copy = calloc(size + 1, 1); /* +1: a fixed-length string need not be NUL-terminated */
    if (copy && H5Aread(attr, type, copy) < 0) {
      st = weft_tf_h5_error(WEFT_ERR_IO, file->path, where, "cannot read attribute '%s'", name);
      goto done;
    }
  } else {
    st = weft_tf_h5_error(WEFT_ERR_IO, file->path, where, "cannot inspect attribute '%s'", name);
    goto done;
  }
  if (!copy) st = WEFT_ERR_NO_MEMORY;
done:
  if (st != WEFT_OK) {
    free(copy);
    copy = NULL;
  }
  if (mem >= 0) H5Tclose(mem);
  H5Tclose(type);
  H5Aclose(attr);
  *value_p = copy;
  return st;
}
