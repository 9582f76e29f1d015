import CV4L2
import Foundation
import LoupeImaging
import Synchronization

/// A V4L2 camera through libv4l2: negotiates MJPEG, YUYV or GREY at a
/// requested size and rate, streams through mmap'd buffers, and exposes
/// exposure and gain where the device offers them.
///
/// Kept small and isolated: the machines Loupe is developed on have no
/// camera and cannot load a virtual one, so only the error paths and the
/// pixel conversions are tested (see docs).
public final class V4L2Camera: FrameSource {
    public struct Request: Sendable {
        public var width = 1280
        public var height = 1024
        public var framesPerSecond = 30
        /// Formats to try, in order.
        public var formats: [CameraPixelFormat] = [.mjpeg, .yuyv, .grey]
        /// How long `nextFrame` waits for the camera.
        public var timeoutMilliseconds = 2000

        public init() {}
    }

    private struct Mapped: @unchecked Sendable {
        var address: UnsafeMutableRawPointer
        var length: Int
    }

    public let path: String
    /// What was negotiated.
    public let format: CameraPixelFormat
    public let width: Int
    public let height: Int
    private let bytesPerLine: Int
    private let descriptor: Int32
    private let buffers: [Mapped]
    private let request: Request
    private let sequence = Mutex(0)

    public init(path: String, request: Request = Request()) throws {
        guard FileManager.default.fileExists(atPath: path) else { throw CaptureError.noDevice(path: path) }
        let fd = loupe_v4l2_open(path)
        guard fd >= 0 else {
            switch errno {
            case EBUSY: throw CaptureError.deviceBusy(path: path)
            case ENOENT, ENODEV, ENXIO: throw CaptureError.noDevice(path: path)
            case ENOTTY, EINVAL: throw CaptureError.device(path: path, reason: "not a V4L2 device (\(String(cString: strerror(errno)))")
            default: throw CaptureError.device(path: path, reason: String(cString: strerror(errno)))
            }
        }
        var opened = true
        defer { if opened { v4l2_close(fd) } }
        self.path = path
        self.request = request
        descriptor = fd

        var capability = v4l2_capability()
        guard loupe_v4l2_ioctl(fd, loupe_VIDIOC_QUERYCAP(), &capability) == 0 else {
            throw CaptureError.device(path: path, reason: "not a V4L2 device (\(String(cString: strerror(errno))))")
        }
        let capabilities = capability.capabilities & UInt32(V4L2_CAP_DEVICE_CAPS) != 0 ? capability.device_caps : capability.capabilities
        guard capabilities & UInt32(V4L2_CAP_VIDEO_CAPTURE) != 0, capabilities & UInt32(V4L2_CAP_STREAMING) != 0 else {
            throw CaptureError.device(path: path, reason: "not a streaming video capture device")
        }

        // Formats the device offers.
        var offered: [UInt32] = []
        var description = v4l2_fmtdesc()
        description.type = V4L2_BUF_TYPE_VIDEO_CAPTURE.rawValue
        while loupe_v4l2_ioctl(fd, loupe_VIDIOC_ENUM_FMT(), &description) == 0 {
            offered.append(description.pixelformat)
            description.index += 1
        }
        guard let chosen = request.formats.first(where: { offered.contains($0.fourCC) }) else {
            throw CaptureError.formatNotOffered(
                path: path, wanted: request.formats.map(\.rawValue).joined(separator: " or "),
                offered: offered.map(CameraPixelFormat.name(of:)))
        }
        var format = v4l2_format()
        format.type = V4L2_BUF_TYPE_VIDEO_CAPTURE.rawValue
        format.fmt.pix.width = UInt32(request.width)
        format.fmt.pix.height = UInt32(request.height)
        format.fmt.pix.pixelformat = chosen.fourCC
        format.fmt.pix.field = V4L2_FIELD_NONE.rawValue
        guard loupe_v4l2_ioctl(fd, loupe_VIDIOC_S_FMT(), &format) == 0 else {
            throw CaptureError.device(
                path: path, reason: "cannot set \(chosen.rawValue) \(request.width)x\(request.height): \(String(cString: strerror(errno)))")
        }
        self.format = chosen
        width = Int(format.fmt.pix.width)
        height = Int(format.fmt.pix.height)
        bytesPerLine = Int(format.fmt.pix.bytesperline)

        var parameters = v4l2_streamparm()
        parameters.type = V4L2_BUF_TYPE_VIDEO_CAPTURE.rawValue
        parameters.parm.capture.timeperframe = v4l2_fract(numerator: 1, denominator: UInt32(request.framesPerSecond))
        _ = loupe_v4l2_ioctl(fd, loupe_VIDIOC_S_PARM(), &parameters)  // not every device lets the rate be set

        var requestBuffers = v4l2_requestbuffers()
        requestBuffers.count = 4
        requestBuffers.type = V4L2_BUF_TYPE_VIDEO_CAPTURE.rawValue
        requestBuffers.memory = V4L2_MEMORY_MMAP.rawValue
        guard loupe_v4l2_ioctl(fd, loupe_VIDIOC_REQBUFS(), &requestBuffers) == 0, requestBuffers.count > 0 else {
            throw CaptureError.device(path: path, reason: "cannot get capture buffers: \(String(cString: strerror(errno)))")
        }
        var mapped: [Mapped] = []
        for index in 0..<requestBuffers.count {
            var buffer = v4l2_buffer()
            buffer.type = V4L2_BUF_TYPE_VIDEO_CAPTURE.rawValue
            buffer.memory = V4L2_MEMORY_MMAP.rawValue
            buffer.index = index
            guard loupe_v4l2_ioctl(fd, loupe_VIDIOC_QUERYBUF(), &buffer) == 0,
                let address = loupe_v4l2_mmap(fd, Int(buffer.length), Int(buffer.m.offset)), loupe_map_failed(address) == 0
            else {
                for region in mapped { v4l2_munmap(region.address, region.length) }
                throw CaptureError.device(path: path, reason: "cannot map capture buffer \(index): \(String(cString: strerror(errno)))")
            }
            mapped.append(Mapped(address: address, length: Int(buffer.length)))
            guard loupe_v4l2_ioctl(fd, loupe_VIDIOC_QBUF(), &buffer) == 0 else {
                for region in mapped { v4l2_munmap(region.address, region.length) }
                throw CaptureError.device(path: path, reason: "cannot queue capture buffer \(index)")
            }
        }
        buffers = mapped
        var type = Int32(V4L2_BUF_TYPE_VIDEO_CAPTURE.rawValue)
        guard loupe_v4l2_ioctl(fd, loupe_VIDIOC_STREAMON(), &type) == 0 else {
            for region in mapped { v4l2_munmap(region.address, region.length) }
            throw CaptureError.device(path: path, reason: "cannot start streaming: \(String(cString: strerror(errno)))")
        }
        opened = false
    }

    deinit {
        var type = Int32(V4L2_BUF_TYPE_VIDEO_CAPTURE.rawValue)
        _ = loupe_v4l2_ioctl(descriptor, loupe_VIDIOC_STREAMOFF(), &type)
        for region in buffers { v4l2_munmap(region.address, region.length) }
        v4l2_close(descriptor)
    }

    public func nextFrame() async throws -> CapturedFrame? {
        var poller = pollfd(fd: descriptor, events: Int16(POLLIN), revents: 0)
        let ready = poll(&poller, 1, Int32(request.timeoutMilliseconds))
        if ready == 0 { throw CaptureError.timeout(path: path, milliseconds: request.timeoutMilliseconds) }
        if ready < 0 || poller.revents & Int16(POLLERR | POLLHUP | POLLNVAL) != 0 { throw CaptureError.unplugged(path: path) }
        var buffer = v4l2_buffer()
        buffer.type = V4L2_BUF_TYPE_VIDEO_CAPTURE.rawValue
        buffer.memory = V4L2_MEMORY_MMAP.rawValue
        guard loupe_v4l2_ioctl(descriptor, loupe_VIDIOC_DQBUF(), &buffer) == 0 else {
            if errno == ENODEV || errno == EIO { throw CaptureError.unplugged(path: path) }
            throw CaptureError.device(path: path, reason: "cannot take a frame: \(String(cString: strerror(errno)))")
        }
        defer { _ = loupe_v4l2_ioctl(descriptor, loupe_VIDIOC_QBUF(), &buffer) }
        let region = buffers[Int(buffer.index)]
        let bytes = UnsafeRawBufferPointer(start: region.address, count: min(region.length, Int(buffer.bytesused)))
        let image = try format.grey(from: bytes, width: width, height: height, bytesPerLine: bytesPerLine)
        let number = sequence.withLock {
            $0 += 1; return $0
        }
        return CapturedFrame(sequence: number, image: image, origin: path)
    }

    /// Camera controls Loupe sets.
    public enum Control: Sendable {
        case exposure
        case gain

        var id: UInt32 {
            switch self {
            case .exposure: return UInt32(V4L2_CID_EXPOSURE_ABSOLUTE)
            case .gain: return UInt32(V4L2_CID_GAIN)
            }
        }
    }

    /// The control's range, or nil when the device does not offer it.
    public func range(of control: Control) -> ClosedRange<Int>? {
        var query = v4l2_queryctrl()
        query.id = control.id
        guard loupe_v4l2_ioctl(descriptor, loupe_VIDIOC_QUERYCTRL(), &query) == 0,
            query.flags & UInt32(V4L2_CTRL_FLAG_DISABLED) == 0
        else { return nil }
        return Int(query.minimum)...Int(query.maximum)
    }

    /// Sets a control, clamped to its range.
    public func set(_ control: Control, to value: Int) throws {
        guard let range = range(of: control) else {
            throw CaptureError.device(path: path, reason: "offers no \(control) control")
        }
        var setting = v4l2_control(id: control.id, value: Int32(min(range.upperBound, max(range.lowerBound, value))))
        guard loupe_v4l2_ioctl(descriptor, loupe_VIDIOC_S_CTRL(), &setting) == 0 else {
            throw CaptureError.device(path: path, reason: "cannot set \(control): \(String(cString: strerror(errno)))")
        }
    }
}
