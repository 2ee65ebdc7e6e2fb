// jsmn_types.h: jsmn's token type for headers, without its implementation
// (the implementation is compiled once, in json.c).
#ifndef QL_JSMN_TYPES_H
#define QL_JSMN_TYPES_H
#define JSMN_HEADER
#define JSMN_STRICT
#define JSMN_PARENT_LINKS  // as json.c compiles it
#include <jsmn.h>
#undef JSMN_HEADER
#endif
