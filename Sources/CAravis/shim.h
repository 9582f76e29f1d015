// Aravis 0.8 (Debian: libaravis-dev, whose pkg-config also needs
// libusb-1.0-0-dev) for GigE Vision and USB3 Vision cameras. Swift cannot
// read the pixel-format macros (casts), call g_object_set (variadic) or
// g_signal_connect (a macro), so they are wrapped here.
#include <arv.h>

static inline guint32 loupe_arv_mono8(void) { return ARV_PIXEL_FORMAT_MONO_8; }
static inline guint32 loupe_arv_mono10(void) { return ARV_PIXEL_FORMAT_MONO_10; }
static inline guint32 loupe_arv_mono12(void) { return ARV_PIXEL_FORMAT_MONO_12; }
static inline guint32 loupe_arv_mono14(void) { return ARV_PIXEL_FORMAT_MONO_14; }
static inline guint32 loupe_arv_mono16(void) { return ARV_PIXEL_FORMAT_MONO_16; }
static inline guint32 loupe_arv_bayer_gr8(void) { return ARV_PIXEL_FORMAT_BAYER_GR_8; }
static inline guint32 loupe_arv_bayer_rg8(void) { return ARV_PIXEL_FORMAT_BAYER_RG_8; }
static inline guint32 loupe_arv_bayer_gb8(void) { return ARV_PIXEL_FORMAT_BAYER_GB_8; }
static inline guint32 loupe_arv_bayer_bg8(void) { return ARV_PIXEL_FORMAT_BAYER_BG_8; }
static inline guint32 loupe_arv_rgb8(void) { return ARV_PIXEL_FORMAT_RGB_8_PACKED; }

/// Packet resend on a GigE Vision stream (ArvGvStream "packet-resend"); no-op on other streams.
static inline void loupe_arv_stream_set_packet_resend(ArvStream *stream, gboolean resend) {
    if (ARV_IS_GV_STREAM(stream)) {
        g_object_set(stream, "packet-resend", resend ? ARV_GV_STREAM_PACKET_RESEND_ALWAYS : ARV_GV_STREAM_PACKET_RESEND_NEVER, NULL);
    }
}

static void loupe_arv_on_control_lost(ArvDevice *device, gpointer flag) {
    (void)device;
    g_atomic_int_set((gint *)flag, 1);
}

/// Sets *flag to 1 (atomically, from Aravis' heartbeat thread) when the
/// device stops answering. The flag must outlive the device.
static inline void loupe_arv_watch_control_lost(ArvDevice *device, gint *flag) {
    g_signal_connect(device, "control-lost", G_CALLBACK(loupe_arv_on_control_lost), flag);
}

static inline gint loupe_arv_flag_get(gint *flag) { return g_atomic_int_get(flag); }

/// The message of a GError, and frees it.
static inline const char *loupe_arv_error_message(GError *error) { return error ? error->message : "unknown error"; }
