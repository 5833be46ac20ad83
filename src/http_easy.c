/* http_easy.c - placeholder until its part lands. */
#include "plink.h"
void plink_http_easy_open(lua_State *L) { (void)L; }
