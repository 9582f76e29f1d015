// libspng (Debian: libspng-dev), the PNG codec behind LoupeImaging.
#include <spng.h>
