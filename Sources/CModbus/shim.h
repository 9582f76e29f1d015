// libmodbus 3.1 (Debian: libmodbus-dev) for the agent's Modbus TCP server
// and the tests' client. Its error numbers are macros on an offset, wrapped here.
#include <errno.h>
#include <modbus/modbus.h>

static inline int loupe_modbus_errno(void) { return errno; }
static inline int loupe_modbus_illegal_address(void) { return EMBXILADD; }
static inline int loupe_modbus_busy(void) { return EMBXSBUSY; }
static inline int loupe_modbus_failure(void) { return EMBXSFAIL; }
static inline int loupe_modbus_max_adu(void) { return MODBUS_TCP_MAX_ADU_LENGTH; }
