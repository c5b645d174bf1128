/* tinygru device protocol: the MLPerf Tiny DUT command set over a byte stream,
 * plus tinygru commands (info, raw int8 results, streaming, raw timer ticks).
 * See docs/device-protocol.md.
 *
 * The parser knows nothing of the engine or the hardware: bytes go in through
 * tgp_feed, replies leave through tgp_port.write, and the model is reached
 * through the tgp_port callbacks. It builds unchanged for the host (tests,
 * fuzzing) and for the device. */
#ifndef TG_PROTOCOL_H
#define TG_PROTOCOL_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/** Longest command line (without its terminator). Longer lines are rejected. */
#define TGP_LINE_MAX 256
/** Command terminator. */
#define TGP_TERMINATOR '%'
/** Discards a partly received line without a reply (ASCII CAN). */
#define TGP_CANCEL 0x18
/** Most head outputs the parser formats. */
#define TGP_MAX_OUTPUTS 64
/** Warm-ups or inferences of one infer command. */
#define TGP_MAX_RUNS 1000000

/** What the device says about its model (all strings NUL terminated, printable). */
typedef struct {
    const char *device_name;  /**< name% reply: m-name-dut-[device_name]. */
    const char *model_id;     /**< profile% reply: m-model-[model_id] (MLPerf benchmark id). */
    const char *model_name;   /**< info% reply: m-info-model-[model_name] (the bundle's). */
    const char *profile;      /**< profile% reply: m-profile-[profile]. */
    const char *model_sha256; /**< sha256 of the int8 step model (.tflite), given at build. */
    const char *data_sha256;  /**< sha256 of the linked model data, computed at boot. */
    uint32_t data_bytes;      /**< bytes hashed into data_sha256. */
    uint64_t data_ticks;      /**< timer ticks the boot hash took. */
    uint32_t data_dsp;        /**< 1: a TG_USE_DSP build (model_data.sha256_dsp applies). */
    const char *engine_version;
    const char *target;       /**< CPU / board, e.g. "cortex-m4/mps2-an386". */
    const char *quant;        /**< quantization summary, key=value,... */
    const char *input_format; /**< "int16le" (raw counts) or "int8" (model input tensor). */
    int32_t value_bytes;      /**< bytes per input value: 2 (int16le) or 1 (int8). */
    uint32_t baud;            /**< console UART line rate. */
    int32_t window;           /**< T, samples per window. */
    int32_t channels;         /**< C, values per sample. */
    int32_t kernel;           /**< k */
    int32_t stride;           /**< s */
    int32_t n_outputs;        /**< head outputs. Range: {1, TGP_MAX_OUTPUTS}. */
    int32_t n_layers;
    const int32_t *units; /**< [n_layers] */
    int32_t output_zero_point;
    float output_scale; /**< m-results values are (q - zero point) * scale. */
} tgp_model_info;

/** Everything the parser needs from its environment. */
typedef struct {
    void *ctx;
    /** Send n reply bytes. */
    void (*write)(void *ctx, const char *s, uint32_t n);
    /** Free-running timer. */
    uint64_t (*ticks)(void *ctx);
    uint32_t ticks_hz;
    /** Energy mode (MLPerf EE_CFG_ENERGY_MODE): pulse the timestamp pin (pull low for at
     *  least 1 us, release). NULL in performance mode, where timestamps are m-lap-us lines. */
    void (*timestamp_pin)(void *ctx);
    /** A whole window from a zero state; `input` holds n_samples samples in the info's
     *  input_format; out gets n_outputs int8 values.
     *  Returns >= 0 (number of steps that produced output, 0 or more) or < 0 on error. */
    int32_t (*window)(void *ctx, const uint8_t *input, int32_t n_samples, int8_t *out);
    /** Zero the streaming state. */
    void (*stream_reset)(void *ctx);
    /** Push samples through the streaming state (carried between calls); out gets the
     *  head output of the last step that ran. Returns steps run (>= 0) or < 0. */
    int32_t (*stream_push)(void *ctx, const uint8_t *input, int32_t n_samples, int8_t *out);
} tgp_port;

/** Parser state; one per link. */
typedef struct {
    const tgp_port *port;
    const tgp_model_info *info;
    uint8_t *buf;       /**< db buffer: the bytes as received; the port reads int16le values
                             in place (a little-endian target). */
    uint32_t buf_cap;   /**< bytes: one whole window, T * C * value_bytes. */
    uint32_t load_size; /**< bytes announced by db load; 0 = none. */
    uint32_t load_pos;  /**< bytes received. */
    char line[TGP_LINE_MAX + 1];
    uint32_t line_len;
    uint8_t line_overflow;
    uint8_t line_bad_byte;
    uint8_t have_results;
    int8_t results[TGP_MAX_OUTPUTS];
    uint64_t last_ticks;     /**< ticks of the last timed runs. */
    uint32_t last_runs;      /**< runs in last_ticks. */
    uint32_t stream_samples; /**< samples pushed since the last stream reset. */
} tgp_state;

/**
 * @brief Bind a parser to its port, model description and db buffer.
 * @param buf     buffer of buf_cap bytes, one whole window (T * C * value_bytes), aligned
 *                for the input values (an int16_t array in int16le format).
 */
void tgp_init(tgp_state *p, const tgp_port *port, const tgp_model_info *info, uint8_t *buf,
              uint32_t buf_cap);

/** @brief The boot banner, as MLPerf's reference firmware prints it: the timestamp mode,
 *  a timestamp (m-lap-us, or a pin pulse in energy mode), init done, ready. */
void tgp_boot(tgp_state *p);

/** @brief Feed one received byte; a complete command is executed and answered at once. */
void tgp_feed(tgp_state *p, uint8_t c);

#ifdef __cplusplus
}
#endif

#endif /* TG_PROTOCOL_H */
