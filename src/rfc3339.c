/* rfc3339.c - strict RFC 3339 parser (see rfc3339.h). */
#include "rfc3339.h"

/* n digits at s into *v; 0 when one is not a digit */
static int r3_digits(const char *s, int n, int *v)
{
    int i, x = 0;
    for (i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return 0;
        x = x * 10 + (s[i] - '0');
    }
    *v = x;
    return 1;
}

static int r3_leap(int y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

/* days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant) */
static long long r3_days(int y, int m, int d)
{
    long long era, yoe, doy, doe;
    y -= m <= 2;
    era = (y >= 0 ? y : y - 399) / 400;
    yoe = y - era * 400;
    doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

int plink_rfc3339(const char *s, size_t n, long long *out)
{
    static const int mdays[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int Y, M, D, h, m, sec, oh = 0, om = 0, sign = 0, dim;
    size_t i;
    /* YYYY-MM-DDTHH:MM:SS is 19 bytes, the shortest offset 'Z' one more */
    if (n < 20)
        return -1;
    if (!r3_digits(s, 4, &Y) || s[4] != '-' || !r3_digits(s + 5, 2, &M)
        || s[7] != '-' || !r3_digits(s + 8, 2, &D)
        || (s[10] != 'T' && s[10] != 't')
        || !r3_digits(s + 11, 2, &h) || s[13] != ':'
        || !r3_digits(s + 14, 2, &m) || s[16] != ':'
        || !r3_digits(s + 17, 2, &sec))
        return -1;
    i = 19;
    if (s[i] == '.') {
        size_t start = ++i;
        while (i < n && s[i] >= '0' && s[i] <= '9')
            i++;
        if (i == start)
            return -1;
    }
    if (i >= n)
        return -1;
    if (s[i] == 'Z' || s[i] == 'z') {
        i++;
    } else if (s[i] == '+' || s[i] == '-') {
        sign = s[i] == '-' ? -1 : 1;
        if (n - i < 6 || !r3_digits(s + i + 1, 2, &oh) || s[i + 3] != ':'
            || !r3_digits(s + i + 4, 2, &om))
            return -1;
        i += 6;
    } else {
        return -1;
    }
    if (i != n)
        return -1;
    if (M < 1 || M > 12 || D < 1)
        return -1;
    dim = mdays[M - 1] + (M == 2 && r3_leap(Y));
    /* a leap second is at 23:59:60 UTC: its minute is 59 in UTC, not
     * always locally (05:29:60+05:30) */
    if (D > dim || h > 23 || m > 59 || sec > 60 || oh > 23 || om > 59
        || (sec == 60 && (m - sign * om + 60) % 60 != 59))
        return -1;
    *out = r3_days(Y, M, D) * 86400LL + h * 3600LL + m * 60LL + sec
           - sign * (oh * 3600LL + om * 60LL);
    return 0;
}
