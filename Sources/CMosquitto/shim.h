// libmosquitto 2.0 (Debian: libmosquitto-dev) for the agent's MQTT link and
// the tests' subscriber. Its error and option numbers are enums; errno is a macro.
#include <errno.h>
#include <stdbool.h>
#include <mosquitto.h>

static inline int loupe_mosquitto_errno(void) { return errno; }
