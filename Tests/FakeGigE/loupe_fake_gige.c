// A GigE Vision camera on loopback for Loupe's tests and demo: Aravis' own
// simulator (ArvGvFakeCamera, GVCP and GVSP over UDP, discovered at the
// interface's address), streaming a picture the caller chooses instead of
// Aravis' ramp, so that what arrives through the agent's camera path can be
// compared pixel for pixel with what was sent.
//
//   loupe-fake-gige SERIAL [--image FILE.pgm] [--interface 127.0.0.1]
//                   [--lost-per-thousand N] [--line-hz F]
//
// FILE.pgm: binary 8-bit PGM (P5), tiled over the frame; without one, a ramp
// that moves by one grey level a frame. Every pixel format of the fake device
// is filled from the same grey picture: Mono8 as is, Mono16 as v * 257, RGB8
// as (v, v, v), the Bayer formats with v on every site. --lost-per-thousand
// drops that share of GVSP packets (what a congested link does); --line-hz
// fires the device's hardware trigger line (Line0) at that rate.
// Prints "ready SERIAL ADDRESS" once it answers and runs until stdin closes,
// SIGTERM or SIGINT.
#include <arv.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct {
    unsigned char *grey;
    int width, height;
    unsigned frame;
} Picture;

static int read_pgm(const char *path, Picture *picture) {
    FILE *file = fopen(path, "rb");
    if (!file) { fprintf(stderr, "loupe-fake-gige: cannot open %s: %s\n", path, strerror(errno)); return -1; }
    int width = 0, height = 0, maximum = 0;
    if (fscanf(file, "P5 %d %d %d", &width, &height, &maximum) != 3 || width <= 0 || height <= 0 || maximum != 255) {
        fprintf(stderr, "loupe-fake-gige: %s is not an 8-bit binary PGM (P5, maximum 255)\n", path);
        fclose(file);
        return -1;
    }
    fgetc(file);  // the single whitespace after the header
    picture->grey = malloc((size_t)width * height);
    if (!picture->grey || fread(picture->grey, 1, (size_t)width * height, file) != (size_t)width * height) {
        fprintf(stderr, "loupe-fake-gige: %s is shorter than %dx%d\n", path, width, height);
        fclose(file);
        return -1;
    }
    fclose(file);
    picture->width = width;
    picture->height = height;
    return 0;
}

static unsigned char grey_at(const Picture *picture, int x, int y) {
    if (!picture->grey) return (unsigned char)(x + y + picture->frame);
    return picture->grey[(y % picture->height) * picture->width + (x % picture->width)];
}

static void fill(ArvBuffer *buffer, void *data, guint32 exposure_us, guint32 gain, ArvPixelFormat format) {
    (void)exposure_us; (void)gain;
    Picture *picture = data;
    // The buffer holds the whole payload (the simulator checked its size
    // before calling this); the size it reports here is what was filled so far.
    unsigned char *bytes = (unsigned char *)arv_buffer_get_data(buffer, NULL);
    int width = arv_buffer_get_image_width(buffer), height = arv_buffer_get_image_height(buffer);
    int depth = format == ARV_PIXEL_FORMAT_MONO_16 ? 2 : format == ARV_PIXEL_FORMAT_RGB_8_PACKED ? 3 : 1;
    if (!bytes) return;
    for (int y = 0; y < height; y++) {
        for (int x = 0; x < width; x++) {
            unsigned char v = grey_at(picture, x, y);
            size_t at = ((size_t)y * width + x) * depth;
            if (depth == 2) { unsigned value = v * 257u; bytes[at] = value & 0xFF; bytes[at + 1] = value >> 8; }
            else if (depth == 3) { bytes[at] = bytes[at + 1] = bytes[at + 2] = v; }
            else bytes[at] = v;
        }
    }
    picture->frame++;
}

static volatile sig_atomic_t stopping = 0;
static void on_signal(int number) { (void)number; stopping = 1; }

int main(int argc, char **argv) {
    if (argc < 2 || argv[1][0] == '-') {
        fprintf(stderr, "usage: loupe-fake-gige SERIAL [--image FILE.pgm] [--interface ADDRESS] [--lost-per-thousand N] [--line-hz F]\n");
        return 2;
    }
    const char *serial = argv[1], *interface = "127.0.0.1", *image = NULL;
    double lost = 0, line_hz = 0;
    for (int i = 2; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--image")) image = argv[i + 1];
        else if (!strcmp(argv[i], "--interface")) interface = argv[i + 1];
        else if (!strcmp(argv[i], "--lost-per-thousand")) lost = atof(argv[i + 1]) / 1000.0;
        else if (!strcmp(argv[i], "--line-hz")) line_hz = atof(argv[i + 1]);
        else { fprintf(stderr, "loupe-fake-gige: unknown option %s\n", argv[i]); return 2; }
    }
    Picture picture = {0};
    if (image && read_pgm(image, &picture) != 0) return 2;

    ArvGvFakeCamera *camera = g_object_new(ARV_TYPE_GV_FAKE_CAMERA, "interface-name", interface, "serial-number", serial,
                                           "gvsp-lost-ratio", lost, NULL);
    if (!arv_gv_fake_camera_is_running(camera)) {
        fprintf(stderr, "loupe-fake-gige: cannot listen on %s (is another fake camera running?)\n", interface);
        g_object_unref(camera);
        return 1;
    }
    ArvFakeCamera *device = arv_gv_fake_camera_get_fake_camera(camera);
    arv_fake_camera_set_fill_pattern(device, fill, &picture);
    if (line_hz > 0) arv_fake_camera_set_trigger_frequency(device, line_hz);

    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    printf("ready %s %s\n", serial, interface);
    fflush(stdout);
    char chunk[64];
    while (!stopping) {
        ssize_t got = read(STDIN_FILENO, chunk, sizeof chunk);
        if (got == 0 || (got < 0 && errno != EINTR)) break;
    }
    g_object_unref(camera);
    free(picture.grey);
    return 0;
}
