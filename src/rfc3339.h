/* rfc3339.h - RFC 3339 date-time with offset -> unix seconds. */
#ifndef PLINK_RFC3339_H
#define PLINK_RFC3339_H

#include <stddef.h>

/* Parses "YYYY-MM-DDTHH:MM:SS[.frac](Z|+HH:MM|-HH:MM)". 'T' and 'Z' may be
 * lower case (RFC 3339 §5.6 note); a space for 'T' is not accepted, nor is a
 * missing offset (a local time has no fixed instant). Fractional seconds are
 * accepted and dropped (the API takes whole seconds). Second 60 (a leap
 * second) is accepted only at minute 59 in UTC (05:29:60+05:30 too) and
 * counts as the next second.
 * Returns 0 and sets *out, or -1 when the text is not such a date-time or a
 * field is out of range (month 13, Feb 30, hour 24, offset 24:00 ...). */
int plink_rfc3339(const char *s, size_t n, long long *out);

#endif
