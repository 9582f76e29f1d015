// libjpeg-turbo's TurboJPEG API (Debian: libturbojpeg0-dev), the JPEG codec behind LoupeImaging.
#include <stddef.h>
#include <turbojpeg.h>
