/* http_multi.c - placeholder until its part lands. */
#include "plink.h"
void plink_http_multi_open(lua_State *L) { (void)L; }
