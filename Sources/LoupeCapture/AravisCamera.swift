import CAravis
import Dispatch
import Foundation
import LoupeImaging
import Synchronization

/// A GigE Vision or USB3 Vision camera found by Aravis (`loupe camera discover`).
public struct GenICamDevice: Sendable, Codable, Equatable {
    /// Aravis' id, e.g. "Basler-21234567".
    public var id: String
    public var vendor: String
    public var model: String
    public var serial: String
    /// IP address (GigE Vision) or USB bus path (USB3 Vision).
    public var address: String
    /// "GigEVision" or "USB3Vision".
    public var transport: String

    /// Whether `name` (from the config or the command line) means this device:
    /// its id, its serial number or its address.
    public func answers(to name: String) -> Bool { name == id || name == serial || name == address }
}

/// What a GenICam camera's stream has done since the agent started, across
/// reconnections: shown in the agent's status, on the page and in its metrics.
public struct CameraStreamStatistics: Codable, Sendable, Equatable {
    /// "Aravis Fake (GV01) at 127.0.0.1"
    public var device: String
    public var pixelFormat: String
    public var connected: Bool
    /// Frames that arrived whole (inspected) and frames Aravis gave up on.
    public var completedFrames: Int
    public var failedFrames: Int
    /// Frames that arrived with packets missing, timed out or aborted: counted
    /// here, never inspected.
    public var incompleteFrames: Int
    /// Frames the camera sent while Aravis had no free buffer.
    public var underruns: Int
    public var missingPackets: Int
    public var resendRequests: Int
    public var resentPackets: Int
    /// Times the camera was lost and found again.
    public var reconnects: Int
    /// Why the camera was lost, while it is.
    public var lostReason: String?
    /// Being set up again in another trigger mode (a recipe asked for it); triggers wait for the end of it.
    public var settingUp = false
}

/// A source that reports stream statistics (GenICam cameras).
public protocol StreamStatisticsReporting: Sendable {
    var streamStatistics: CameraStreamStatistics { get }
}

/// A GenICam camera (GigE Vision or USB3 Vision) through Aravis 0.8: opened by
/// serial number, address or Aravis id, set to the pixel format, size, rate,
/// exposure, gain, packet size and trigger the config asks for, streamed
/// through a pool of buffers Aravis fills on its own thread.
///
/// Frames with missing packets are counted and dropped, never inspected. A
/// camera that stops answering (unplugged, powered off, its cable cut: Aravis'
/// heartbeat fails) is torn down and `nextFrame` throws
/// `CaptureError.cameraLost`; each later call looks for it again and, once it
/// answers, opens it with the same settings and streams on.
///
/// Blocking Aravis calls run on this camera's own dispatch queue, never on
/// the Swift task pool.
public final class AravisCamera: FrameSource, StreamStatisticsReporting, SoftwareTriggered, TriggerConfigurable {
    public struct Settings: Sendable, Equatable {
        /// Serial number, address or Aravis id; nil: the first camera found.
        public var camera: String?
        /// Region from the sensor's top left; nil: the camera's current size.
        public var width: Int?
        public var height: Int?
        public var framesPerSecond: Double?
        public var exposureMicroseconds: Double?
        public var gainDecibels: Double?
        /// GigE Vision packet size in bytes; nil: negotiated with the camera where it can.
        public var packetSize: Int?
        /// GigE Vision packet resend (asks the camera again for lost packets).
        public var packetResend = true
        /// Formats to ask for, in order; the first the camera offers is used.
        public var pixelFormats = GenICamPixelFormat.preference
        public var trigger = CameraTrigger.freeRun
        /// Free-run: how long `nextFrame` waits for a frame before it says so.
        public var timeoutMilliseconds = 2000
        /// Buffers Aravis fills ahead.
        public var buffers = 6

        public init(camera: String? = nil) { self.camera = camera }
    }

    /// The GenICam cameras Aravis finds on every interface (GigE Vision
    /// discovery broadcast, USB3 Vision enumeration).
    public static func discover() -> [GenICamDevice] {
        arv_update_device_list()
        return (0..<arv_get_n_devices()).map { index in
            func text(_ pointer: UnsafePointer<CChar>?) -> String { pointer.map { String(cString: $0) } ?? "" }
            return GenICamDevice(
                id: text(arv_get_device_id(index)), vendor: text(arv_get_device_vendor(index)), model: text(arv_get_device_model(index)),
                serial: text(arv_get_device_serial_nbr(index)), address: text(arv_get_device_address(index)),
                transport: text(arv_get_device_protocol(index)))
        }
    }

    public let settings: Settings
    /// What the config calls it, for messages.
    public let name: String
    private let queue = DispatchQueue(label: "loupe.aravis.stream")
    private let state: Mutex<State>
    private let sequence = Mutex(0)

    private struct State: @unchecked Sendable {
        var connection: Connection?
        var statistics: CameraStreamStatistics
        /// Totals of the streams before the current one.
        var earlier = Counts()
        var cancelled = false
        /// The trigger mode now (`settings.trigger` until a recipe asks for another).
        var trigger: CameraTrigger
        /// The connection was opened in another mode: set it up again before the next frame.
        var retrigger = false
        /// The old connection is closed and the one in the new mode is being opened.
        var reopening = false
    }

    /// Opens the camera now: a camera that is not there is a configuration error at start-up.
    public init(settings: Settings) throws {
        self.settings = settings
        name = settings.camera ?? "the first GenICam camera"
        let connection = try Connection(settings: settings, name: name)
        state = Mutex(
            State(
                connection: connection,
                statistics: CameraStreamStatistics(
                    device: connection.label, pixelFormat: connection.format.rawValue, connected: true, completedFrames: 0, failedFrames: 0,
                    incompleteFrames: 0, underruns: 0, missingPackets: 0, resendRequests: 0, resentPackets: 0, reconnects: 0,
                    lostReason: nil),
                trigger: settings.trigger))
    }

    /// The negotiated format and size of the current connection.
    public var format: (pixelFormat: GenICamPixelFormat, width: Int, height: Int)? {
        state.withLock { state in state.connection.map { ($0.format, $0.width, $0.height) } }
    }

    public var streamStatistics: CameraStreamStatistics {
        state.withLock { state in
            var statistics = state.statistics
            let counts = state.earlier + (state.connection?.counts() ?? Counts())
            statistics.completedFrames = counts.completed
            statistics.failedFrames = counts.failed
            statistics.incompleteFrames = counts.incomplete
            statistics.underruns = counts.underruns
            statistics.missingPackets = counts.missingPackets
            statistics.resendRequests = counts.resendRequests
            statistics.resentPackets = counts.resentPackets
            statistics.settingUp = state.retrigger || state.reopening
            return statistics
        }
    }

    public var takesSoftwareTriggers: Bool { triggerMode == .software }

    public var triggerMode: CameraTrigger { state.withLock { $0.trigger } }

    /// The next frame is taken in `trigger` mode: the camera's acquisition is
    /// stopped and set up again (GenICam allows trigger changes only then).
    public func setTriggerMode(_ trigger: CameraTrigger) {
        state.withLock { state in
            guard state.trigger != trigger else { return }
            state.trigger = trigger
            state.retrigger = true
        }
    }

    /// The settings as the camera is to be opened now.
    private var current: Settings {
        var current = settings
        current.trigger = triggerMode
        return current
    }

    /// Fires the camera's software trigger: one frame in `.software` mode.
    public func trigger() throws {
        let (connection, settingUp) = state.withLock { ($0.connection, $0.retrigger || $0.reopening) }
        // A trigger while the camera changes mode is not a lost camera: it is refused by name, to be sent again.
        if settingUp { throw CaptureError.settingUp(camera: name, mode: triggerMode.name) }
        guard let connection else {
            throw CaptureError.cameraLost(camera: name, reason: state.withLock { $0.statistics.lostReason } ?? "not connected")
        }
        try connection.softwareTrigger()
    }

    public func nextFrame() async throws -> CapturedFrame? {
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { continuation in
                queue.async { continuation.resume(with: Result { try self.takeFrame() }) }
            }
        } onCancel: {
            state.withLock { $0.cancelled = true }
        }
    }

    /// On the camera's queue: the next whole frame, waiting in short slices so
    /// that a lost camera and a cancelled task are noticed.
    private func takeFrame() throws -> CapturedFrame {
        while true {
            try reopenInNewMode()
            if let frame = try takeFrame(from: try connected()) { return frame }
        }
    }

    /// The next frame from this connection; nil when a new trigger mode was
    /// asked for meanwhile (a triggered camera may wait for ever), so the
    /// caller lets go of the connection and opens one in the new mode.
    private func takeFrame(from connection: Connection) throws -> CapturedFrame? {
        let started = DispatchTime.now().uptimeNanoseconds
        let limit = UInt64(settings.timeoutMilliseconds) * 1_000_000
        while true {
            if state.withLock({ $0.cancelled }) { throw CancellationError() }
            if state.withLock({ $0.retrigger }) { return nil }
            if connection.lost {
                throw lose(connection, reason: "it stopped answering (no reply to the heartbeat)")
            }
            switch connection.pop(sliceMicroseconds: 200_000) {
            case .frame(let buffer):
                defer { connection.requeue(buffer) }
                let image = try connection.image(of: buffer)
                let number = sequence.withLock {
                    $0 += 1; return $0
                }
                return CapturedFrame(sequence: number, image: image, origin: "genicam:\(connection.serial)")
            case .incomplete(let reason, let startedAt):
                // A free-running camera sends another frame; a triggered one sent the frame its trigger asked for.
                guard triggerMode == .freeRun else {
                    throw CaptureError.incompleteFrame(camera: name, reason: reason, startedAt: startedAt)
                }
                continue
            case .nothing:
                if triggerMode == .freeRun, DispatchTime.now().uptimeNanoseconds - started > limit {
                    // Silent before the heartbeat noticed: ask the camera itself.
                    if let silence = connection.unanswered() {
                        throw lose(connection, reason: "it stopped answering (\(silence))")
                    }
                    throw CaptureError.timeout(path: name, milliseconds: settings.timeoutMilliseconds)
                }
            }
        }
    }

    /// The current connection, or a new one to a camera that came back.
    private func connected() throws -> Connection {
        if let connection = state.withLock({ $0.connection }) { return connection }
        let reason = state.withLock { $0.statistics.lostReason } ?? "not connected"
        let connection: Connection
        do {
            connection = try Connection(settings: current, name: name)
        } catch {
            throw CaptureError.cameraLost(camera: name, reason: "\(reason); not back yet (\(error))")
        }
        state.withLock {
            $0.connection = connection
            $0.statistics.connected = true
            $0.statistics.lostReason = nil
            $0.statistics.reconnects += 1
            $0.statistics.device = connection.label
            $0.statistics.pixelFormat = connection.format.rawValue
        }
        return connection
    }

    /// Closes a connection opened in another trigger mode and opens one in the new mode (not a reconnection: the camera was never lost).
    private func reopenInNewMode() throws {
        // The old connection goes first: a GigE Vision camera takes one controller at a time.
        let asked = state.withLock { state -> Bool in
            guard state.retrigger else { return false }
            state.retrigger = false
            state.reopening = true
            if let old = state.connection {
                state.earlier = state.earlier + old.counts()
                state.connection = nil
            }
            return true
        }
        guard asked else { return }
        let connection: Connection
        do { connection = try Connection(settings: current, name: name) } catch {
            state.withLock {
                $0.reopening = false
                $0.statistics.connected = false
                $0.statistics.lostReason = "cannot set it up in \(triggerMode.name) trigger mode: \(error)"
            }
            throw CaptureError.cameraLost(camera: name, reason: "cannot set it up in \(triggerMode.name) trigger mode: \(error)")
        }
        state.withLock {
            $0.connection = connection; $0.reopening = false
        }
    }

    private func lose(_ connection: Connection, reason: String) -> CaptureError {
        state.withLock {
            $0.earlier = $0.earlier + connection.counts()
            $0.connection = nil
            $0.statistics.connected = false
            $0.statistics.lostReason = reason
        }
        return CaptureError.cameraLost(camera: name, reason: reason)
    }
}

/// Stream counters, summed over connections.
private struct Counts {
    var completed = 0, failed = 0, incomplete = 0, underruns = 0, missingPackets = 0, resendRequests = 0, resentPackets = 0

    static func + (a: Counts, b: Counts) -> Counts {
        Counts(
            completed: a.completed + b.completed, failed: a.failed + b.failed, incomplete: a.incomplete + b.incomplete,
            underruns: a.underruns + b.underruns, missingPackets: a.missingPackets + b.missingPackets,
            resendRequests: a.resendRequests + b.resendRequests, resentPackets: a.resentPackets + b.resentPackets)
    }
}

/// One open camera and its stream; closed when the last reference goes.
private final class Connection: @unchecked Sendable {
    enum Popped {
        case frame(OpaquePointer)
        /// Why, and when its first packet came (the host's clock).
        case incomplete(reason: String, startedAt: Date?)
        case nothing
    }

    let camera: OpaquePointer
    let stream: OpaquePointer
    let format: GenICamPixelFormat
    let width: Int
    let height: Int
    let serial: String
    let label: String
    private let lostFlag: UnsafeMutablePointer<gint>
    private let incomplete = Mutex(0)

    init(settings: AravisCamera.Settings, name: String) throws {
        let devices = AravisCamera.discover()
        guard let device = settings.camera.map({ wanted in devices.first { $0.answers(to: wanted) } }) ?? devices.first else {
            throw CaptureError.cameraNotFound(camera: name, found: devices.map { "\($0.id) (serial \($0.serial), \($0.address))" })
        }
        serial = device.serial
        label = "\(device.vendor) \(device.model) (\(device.serial)) at \(device.address)"
        var error: UnsafeMutablePointer<GError>?
        guard let opened = arv_camera_new(device.id, &error) else {
            throw CaptureError.device(path: name, reason: "cannot open \(label): \(Self.take(&error))")
        }
        let handle = OpaquePointer(opened)
        camera = handle
        var ready = false
        defer { if !ready { g_object_unref(UnsafeMutableRawPointer(handle)) } }

        func check(_ what: String) throws {
            if error != nil { throw CaptureError.device(path: name, reason: "\(what): \(Self.take(&error))") }
        }
        // Pixel format: the first the config allows that the camera offers.
        var count: guint = 0
        var offered: [String] = []
        if let list = arv_camera_dup_available_pixel_formats_as_strings(camera.camera, &count, &error) {
            offered = (0..<Int(count)).compactMap { list[$0].map { String(cString: $0) } }
            g_free(UnsafeMutableRawPointer(mutating: list))
        }
        try check("cannot read the pixel formats it offers")
        guard let format = settings.pixelFormats.first(where: { offered.contains($0.rawValue) }) else {
            throw CaptureError.formatNotOffered(
                path: name, wanted: settings.pixelFormats.map(\.rawValue).joined(separator: " or "), offered: offered)
        }
        arv_camera_set_pixel_format_from_string(camera.camera, format.rawValue, &error)
        try check("cannot set \(format.rawValue)")
        self.format = format

        if settings.width != nil || settings.height != nil {
            var (x, y, w, h): (gint, gint, gint, gint) = (0, 0, 0, 0)
            arv_camera_get_region(camera.camera, &x, &y, &w, &h, &error)
            try check("cannot read its region")
            var (minimum, maximum): (gint, gint) = (0, 0)
            arv_camera_get_width_bounds(camera.camera, &minimum, &maximum, nil)
            let width = settings.width ?? Int(w)
            guard (Int(minimum)...Int(max(minimum, maximum))).contains(width) else {
                throw CaptureError.invalidConfiguration("camera \(name): width \(width) is outside its \(minimum)…\(maximum)")
            }
            arv_camera_get_height_bounds(camera.camera, &minimum, &maximum, nil)
            let height = settings.height ?? Int(h)
            guard (Int(minimum)...Int(max(minimum, maximum))).contains(height) else {
                throw CaptureError.invalidConfiguration("camera \(name): height \(height) is outside its \(minimum)…\(maximum)")
            }
            arv_camera_set_region(camera.camera, 0, 0, gint(width), gint(height), &error)
            try check("cannot set the region \(width)x\(height)")
        }
        var (x, y, w, h): (gint, gint, gint, gint) = (0, 0, 0, 0)
        arv_camera_get_region(camera.camera, &x, &y, &w, &h, &error)
        try check("cannot read its region")
        width = Int(w)
        height = Int(h)

        try Self.set(
            camera, settings.framesPerSecond, name: name, what: "frame rate", available: arv_camera_is_frame_rate_available,
            bounds: arv_camera_get_frame_rate_bounds, apply: arv_camera_set_frame_rate)
        try Self.set(
            camera, settings.exposureMicroseconds, name: name, what: "exposure time", available: arv_camera_is_exposure_time_available,
            bounds: arv_camera_get_exposure_time_bounds, apply: arv_camera_set_exposure_time)
        try Self.set(
            camera, settings.gainDecibels, name: name, what: "gain", available: arv_camera_is_gain_available,
            bounds: arv_camera_get_gain_bounds, apply: arv_camera_set_gain)
        if arv_camera_is_gv_device(camera.camera) != 0 {
            if let packetSize = settings.packetSize {
                arv_camera_gv_set_packet_size(camera.camera, gint(packetSize), &error)
                try check("cannot set the packet size \(packetSize)")
            } else {
                _ = arv_camera_gv_auto_packet_size(camera.camera, &error)
                if error != nil { _ = Self.take(&error) }  // a camera without the test packet keeps its own size
            }
        }
        switch settings.trigger {
        case .freeRun: arv_camera_clear_triggers(camera.camera, &error)
        case .software: arv_camera_set_trigger(camera.camera, "Software", &error)
        case .line(let source): arv_camera_set_trigger(camera.camera, source, &error)
        }
        try check("cannot set its trigger to \(settings.trigger)")

        let payload = Int(arv_camera_get_payload(camera.camera, &error))
        try check("cannot read its payload size")
        guard let stream = arv_camera_create_stream(camera.camera, nil, nil, &error) else {
            throw CaptureError.device(path: name, reason: "cannot open its stream: \(Self.take(&error))")
        }
        self.stream = OpaquePointer(stream)
        loupe_arv_stream_set_packet_resend(stream, settings.packetResend ? 1 : 0)
        for _ in 0..<max(2, settings.buffers) { arv_stream_push_buffer(stream, arv_buffer_new_allocate(payload)) }
        lostFlag = UnsafeMutablePointer<gint>.allocate(capacity: 1)
        lostFlag.initialize(to: 0)
        loupe_arv_watch_control_lost(arv_camera_get_device(camera.camera), lostFlag)
        arv_camera_start_acquisition(camera.camera, &error)
        if error != nil {
            let reason = Self.take(&error)
            g_object_unref(UnsafeMutableRawPointer(self.stream))
            lostFlag.deallocate()
            throw CaptureError.device(path: name, reason: "cannot start acquisition: \(reason)")
        }
        ready = true
    }

    deinit {
        arv_camera_stop_acquisition(camera.camera, nil)
        g_object_unref(UnsafeMutableRawPointer(stream))
        g_object_unref(UnsafeMutableRawPointer(camera))
        lostFlag.deallocate()  // after the device (and its heartbeat thread) is gone
    }

    var lost: Bool { loupe_arv_flag_get(lostFlag) != 0 }

    func pop(sliceMicroseconds: UInt64) -> Popped {
        guard let buffer = arv_stream_timeout_pop_buffer(stream.stream, guint64(sliceMicroseconds)) else { return .nothing }
        let pointer = buffer
        let status = arv_buffer_get_status(buffer)
        if status == ARV_BUFFER_STATUS_SUCCESS { return .frame(pointer) }
        let nanoseconds = arv_buffer_get_system_timestamp(buffer)
        let started = nanoseconds == 0 ? nil : Date(timeIntervalSince1970: Double(nanoseconds) / 1e9)
        incomplete.withLock { $0 += 1 }
        requeue(pointer)
        return .incomplete(reason: Self.describe(status), startedAt: started)
    }

    /// What an Aravis buffer status means, for the message that reports it.
    static func describe(_ status: ArvBufferStatus) -> String {
        switch status {
        case ARV_BUFFER_STATUS_TIMEOUT: return "its packets did not all arrive in time"
        case ARV_BUFFER_STATUS_MISSING_PACKETS: return "packets lost beyond resend"
        case ARV_BUFFER_STATUS_WRONG_PACKET_ID: return "a packet of another frame"
        case ARV_BUFFER_STATUS_SIZE_MISMATCH: return "larger than its buffer"
        case ARV_BUFFER_STATUS_ABORTED: return "acquisition stopped while it arrived"
        default: return "buffer status \(status.rawValue)"
        }
    }

    func requeue(_ buffer: OpaquePointer) { arv_stream_push_buffer(stream.stream, buffer.buffer) }

    func image(of buffer: OpaquePointer) throws -> Image8 {
        var size = 0
        guard let data = arv_buffer_get_image_data(buffer.buffer, &size) else {
            throw CaptureError.device(path: label, reason: "a frame without image data")
        }
        let width = Int(arv_buffer_get_image_width(buffer.buffer)), height = Int(arv_buffer_get_image_height(buffer.buffer))
        let code = arv_buffer_get_image_pixel_format(buffer.buffer)
        guard let format = GenICamPixelFormat.allCases.first(where: { $0.code == code }) else {
            throw CaptureError.device(
                path: label, reason: String(format: "a frame in pixel format 0x%08x, which Loupe does not read", code))
        }
        return try format.grey(from: UnsafeRawBufferPointer(start: data, count: size), width: width, height: height)
    }

    /// Why the camera does not answer a register read, or nil when it does.
    func unanswered() -> String? {
        var error: UnsafeMutablePointer<GError>?
        _ = arv_camera_get_payload(camera.camera, &error)
        return error == nil ? nil : Self.take(&error)
    }

    func softwareTrigger() throws {
        var error: UnsafeMutablePointer<GError>?
        arv_camera_software_trigger(camera.camera, &error)
        if error != nil { throw CaptureError.device(path: label, reason: "software trigger: \(Self.take(&error))") }
    }

    func counts() -> Counts {
        func info(_ key: String) -> Int { Int(arv_stream_get_info_uint64_by_name(stream.stream, key)) }
        var completed: guint64 = 0, failures: guint64 = 0, underruns: guint64 = 0
        arv_stream_get_statistics(stream.stream, &completed, &failures, &underruns)
        let isGV = arv_camera_is_gv_device(camera.camera) != 0
        return Counts(
            completed: Int(completed), failed: Int(failures), incomplete: incomplete.withLock { $0 }, underruns: Int(underruns),
            missingPackets: isGV ? info("n_missing_packets") : 0, resendRequests: isGV ? info("n_resend_requests") : 0,
            resentPackets: isGV ? info("n_resent_packets") : 0)
    }

    /// Sets a float feature, refusing a value outside the camera's range and a
    /// feature the camera lacks (by name, so the config can be corrected).
    private static func set(
        _ camera: OpaquePointer, _ value: Double?, name: String, what: String,
        available: (UnsafeMutablePointer<ArvCamera>?, UnsafeMutablePointer<UnsafeMutablePointer<GError>?>?) -> gboolean,
        bounds: (
            UnsafeMutablePointer<ArvCamera>?, UnsafeMutablePointer<Double>?, UnsafeMutablePointer<Double>?,
            UnsafeMutablePointer<UnsafeMutablePointer<GError>?>?
        ) -> Void,
        apply: (UnsafeMutablePointer<ArvCamera>?, Double, UnsafeMutablePointer<UnsafeMutablePointer<GError>?>?) -> Void
    ) throws {
        guard let value else { return }
        var error: UnsafeMutablePointer<GError>?
        guard available(camera.camera, &error) != 0 else {
            _ = take(&error)
            throw CaptureError.invalidConfiguration("camera \(name) offers no \(what) control")
        }
        var (low, high) = (0.0, 0.0)
        bounds(camera.camera, &low, &high, &error)
        if error == nil, !(low...max(low, high)).contains(value) {
            throw CaptureError.invalidConfiguration("camera \(name): \(what) \(value) is outside its \(low)…\(high)")
        }
        _ = error.map { _ in take(&error) }
        apply(camera.camera, value, &error)
        if error != nil { throw CaptureError.device(path: name, reason: "cannot set the \(what) to \(value): \(take(&error))") }
    }

    static func take(_ error: inout UnsafeMutablePointer<GError>?) -> String {
        defer { if let error { g_error_free(error) }; error = nil }
        return String(cString: loupe_arv_error_message(error))
    }
}

extension OpaquePointer {
    fileprivate var camera: UnsafeMutablePointer<ArvCamera> { UnsafeMutablePointer(self) }
    fileprivate var stream: UnsafeMutablePointer<ArvStream> { UnsafeMutablePointer(self) }
    fileprivate var buffer: OpaquePointer { self }
}

extension GenICamPixelFormat {
    /// The PFNC code a buffer carries.
    var code: guint32 {
        switch self {
        case .mono8: return loupe_arv_mono8()
        case .mono10: return loupe_arv_mono10()
        case .mono12: return loupe_arv_mono12()
        case .mono14: return loupe_arv_mono14()
        case .mono16: return loupe_arv_mono16()
        case .bayerGR8: return loupe_arv_bayer_gr8()
        case .bayerRG8: return loupe_arv_bayer_rg8()
        case .bayerGB8: return loupe_arv_bayer_gb8()
        case .bayerBG8: return loupe_arv_bayer_bg8()
        case .rgb8: return loupe_arv_rgb8()
        }
    }
}
