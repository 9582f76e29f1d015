import CModbus
import Foundation
import LoupeStorage
public import Logging
import LoupeWire
public import ServiceLifecycle
import Synchronization

/// The agent's Modbus TCP server for the line's PLC (libmodbus), off unless
/// the config has `line.modbus`. The register map is `ModbusMap` (and
/// docs/line-integration.md). It serves any number of PLCs and panels at
/// once on its own thread; a request outside the map gets the protocol's
/// ILLEGAL DATA ADDRESS exception from libmodbus, a malformed frame closes
/// that client's connection, and neither touches inspection.
public final class ModbusServer: Service, Sendable {
    private let address: String
    private let pipeline: LivePipeline
    private let logger: Logger
    private let state = Mutex(ModbusMap.State())
    private let counters = Mutex(ModbusStatistics())
    private let stopping = Atomic<Bool>(false)
    private let boundPort = Mutex<Int?>(nil)
    private let onListening: @Sendable (Int) -> Void

    public init(address: String, pipeline: LivePipeline, logger: Logger, onListening: @escaping @Sendable (Int) -> Void = { _ in }) {
        self.address = address
        self.pipeline = pipeline
        self.logger = logger
        self.onListening = onListening
        pipeline.observe { [weak self] _, result, _ in self?.state.withLock { $0.record(result) } }
        pipeline.reportLine { [weak self] status in
            guard let self else { return }
            status.modbus = self.counters.withLock { $0 }
        }
    }

    /// The port it listens on, once it does.
    public var port: Int? { boundPort.withLock { $0 } }

    public func run() async throws {
        let (host, port) = try parseAddress(address)
        guard let context = modbus_new_tcp(host, Int32(port)) else {
            throw LineError.modbus(
                "cannot make a Modbus TCP context for \(address): \(String(cString: modbus_strerror(loupe_modbus_errno())))")
        }
        let listener = modbus_tcp_listen(context, 16)
        guard listener >= 0 else {
            let reason = String(cString: modbus_strerror(loupe_modbus_errno()))
            modbus_free(context)
            throw LineError.modbus("cannot listen for Modbus TCP on \(address): \(reason)")
        }
        var bound = sockaddr_in()
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &bound) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(listener, $0, &length) }
        }
        let actual = Int(UInt16(bigEndian: bound.sin_port))
        boundPort.withLock { $0 = actual }
        counters.withLock { $0.address = "\(host):\(actual)" }
        logger.info("modbus listening", metadata: ["address": "\(host):\(actual)"])
        onListening(actual)
        let handle = ContextHandle(context: context, listener: listener)
        let done = DispatchSemaphore(value: 0)
        DedicatedThread.start("loupe-modbus") { [self] in
            serve(handle)
            done.signal()
        }
        try? await gracefulShutdown()
        stopping.store(true, ordering: .relaxed)
        await LivePipeline.wait(for: done)
        close(listener)
        modbus_free(context)
        logger.info("modbus stopped")
    }

    private struct ContextHandle: @unchecked Sendable {
        let context: OpaquePointer
        let listener: Int32
    }

    /// The serving loop: poll the listener and every client, answer each request.
    private func serve(_ handle: ContextHandle) {
        let context = handle.context
        guard let mapping = ModbusMap.newMapping() else {
            logger.error("modbus: cannot allocate the register map")
            return
        }
        defer { modbus_mapping_free(mapping) }
        var clients: [Int32] = []
        var query = [UInt8](repeating: 0, count: Int(loupe_modbus_max_adu()))
        while !stopping.load(ordering: .relaxed) {
            var fds =
                [pollfd(fd: handle.listener, events: Int16(POLLIN), revents: 0)]
                + clients.map { pollfd(fd: $0, events: Int16(POLLIN), revents: 0) }
            guard poll(&fds, nfds_t(fds.count), 200) > 0 else { continue }
            if fds[0].revents & Int16(POLLIN) != 0 {
                var listener = handle.listener
                let client = modbus_tcp_accept(context, &listener)
                if client >= 0 { clients.append(client) }
            }
            var gone: Set<Int32> = []
            for entry in fds.dropFirst() where entry.revents != 0 {
                modbus_set_socket(context, entry.fd)
                let count = modbus_receive(context, &query)
                if count > 0 {
                    answer(context, mapping, query: query, count: Int(count))
                    counters.withLock { $0.requests += 1 }
                } else if count < 0 {
                    // Closed by the client, or a frame libmodbus could not read: that client goes, the rest stay.
                    gone.insert(entry.fd)
                }
            }
            for fd in gone { close(fd) }
            clients.removeAll { gone.contains($0) }
            counters.withLock { $0.clients = clients.count }
        }
        for fd in clients { close(fd) }
    }

    /// One request: the map refreshed from the pipeline, the trigger coil acted on, the reply sent.
    private func answer(_ context: OpaquePointer, _ mapping: UnsafeMutablePointer<modbus_mapping_t>, query: [UInt8], count: Int) {
        let header = Int(modbus_get_header_length(context))
        let function = query[header]
        let trigger = pipeline.triggerStatistics
        let error = pipeline.sourceError
        state.withLock { $0.fill(mapping, trigger: trigger, sourceError: error, live: pipeline.isLive) }
        // Write Single Coil (5) or Multiple Coils (15) reaching coil 0: a trigger.
        if function == 5 || function == 15, count >= header + 5 {
            let start = Int(query[header + 1]) << 8 | Int(query[header + 2])
            let quantity = function == 5 ? 1 : Int(query[header + 3]) << 8 | Int(query[header + 4])
            let on = function == 5 ? query[header + 3] == 0xFF : (count >= header + 7 && query[header + 6] & 1 == 1)
            // Outside the map, libmodbus answers ILLEGAL DATA ADDRESS below and nothing fires.
            if start == ModbusMap.Coil.trigger, start + quantity <= ModbusMap.Coil.count, on {
                do {
                    let stamp = try pipeline.trigger(source: "modbus")
                    state.withLock { $0.lastAccepted = stamp.sequence }
                    mapping.pointee.tab_bits[ModbusMap.Coil.trigger] = 1
                } catch TriggerError.missed {
                    modbus_reply_exception(context, query, UInt32(MODBUS_EXCEPTION_SLAVE_OR_SERVER_BUSY))
                    return
                } catch {
                    logger.warning("modbus trigger refused", metadata: ["error": "\(error)"])
                    modbus_reply_exception(context, query, UInt32(MODBUS_EXCEPTION_SLAVE_OR_SERVER_FAILURE))
                    return
                }
            }
        }
        _ = query.withUnsafeBufferPointer { modbus_reply(context, $0.baseAddress, Int32(count), mapping) }
        // The trigger coil is the pipeline's, not the PLC's: it reads 1 only while a trigger is in flight.
        mapping.pointee.tab_bits[ModbusMap.Coil.trigger] = pipeline.triggerStatistics?.inFlight == nil ? 0 : 1
    }
}

public enum LineError: Error, CustomStringConvertible, Equatable {
    case modbus(String)
    /// A broker or a message the MQTT link cannot use, named.
    case mqtt(String)

    public var description: String {
        switch self {
        case .modbus(let reason), .mqtt(let reason): return reason
        }
    }
}

/// The Modbus register map (docs/line-integration.md). Addresses are 0-based.
public enum ModbusMap {
    /// Coils (read 1, write 5/15).
    public enum Coil {
        /// Write 1: fire a software trigger. Reads 1 while a trigger is in flight, 0 once its result is in the registers.
        public static let trigger = 0
        static let count = 1
    }

    /// Discrete inputs (read 2).
    public enum Input {
        /// Live, the camera streaming, no trigger in flight: a trigger now is taken.
        public static let ready = 0
        /// A trigger is in flight.
        public static let busy = 1
        /// The last result failed the part.
        public static let lastFailed = 2
        /// The camera gives no frames (lost, or an inspection error).
        public static let fault = 3
        static let count = 4
    }

    /// Input registers (read 4), 16-bit; 32-bit values low word first.
    public enum Register {
        /// Results since the agent started (32-bit: this and the next).
        public static let inspections = 0
        /// 0 none yet, 1 pass, 2 fail, 3 part not found (not aligned), 4 no model installed.
        public static let lastVerdict = 2
        /// The last result's trigger sequence number (32-bit), 0 when free-running.
        public static let lastTrigger = 3
        /// 0 none, 1 camera gives no frames (lost), 2 live inspection off.
        public static let errorCode = 5
        /// The recipe version of the last result.
        public static let recipeVersion = 6
        /// The number in the last result's model version ("v12" -> 12; 0 when it has none).
        public static let modelVersion = 7
        /// Triggers answered as missed since the agent started (saturates at 65535).
        public static let missedTriggers = 8
        /// Per ROI i (recipe order, up to 8), four registers from 10 + 4 i: defect area in pixels (32-bit),
        /// the class index of the largest defect (0: none), the most confident defect pixel x 1000.
        public static let firstROI = 10
        public static let roiStride = 4
        public static let maxROIs = 8
        static let count = firstROI + roiStride * maxROIs
    }

    static func newMapping() -> UnsafeMutablePointer<modbus_mapping_t>? {
        modbus_mapping_new(Int32(Coil.count), Int32(Input.count), 0, Int32(Register.count))
    }

    struct State {
        var inspections = 0
        var last: InspectionResult?
        var lastAccepted = 0

        mutating func record(_ result: InspectionResult) {
            inspections += 1
            last = result
        }

        func fill(_ mapping: UnsafeMutablePointer<modbus_mapping_t>, trigger: TriggerStatistics?, sourceError: String?, live: Bool) {
            let registers = mapping.pointee.tab_input_registers!
            for index in 0..<Register.count { registers[index] = 0 }
            func put32(_ value: Int, at index: Int) {
                let clamped = UInt32(clamping: max(0, value))
                registers[index] = UInt16(clamped & 0xFFFF)
                registers[index + 1] = UInt16(clamped >> 16)
            }
            put32(inspections, at: Register.inspections)
            if let last {
                switch last.verdict {
                case .pass: registers[Register.lastVerdict] = 1
                case .fail: registers[Register.lastVerdict] = 2
                case .notAligned: registers[Register.lastVerdict] = 3
                case .noModel: registers[Register.lastVerdict] = 4
                }
                put32(last.trigger?.sequence ?? 0, at: Register.lastTrigger)
                registers[Register.recipeVersion] = UInt16(clamping: last.recipeVersion)
                registers[Register.modelVersion] = UInt16(clamping: Int(last.modelVersion.filter(\.isNumber).suffix(5)) ?? 0)
                for (index, roi) in last.rois.prefix(Register.maxROIs).enumerated() {
                    let base = Register.firstROI + Register.roiStride * index
                    put32(roi.defects.reduce(0) { $0 + $1.area }, at: base)
                    registers[base + 2] = UInt16(clamping: roi.defects.max { $0.area < $1.area }?.classIndex ?? 0)
                    registers[base + 3] = UInt16(clamping: Int((Double(roi.maxConfidence) * 1000).rounded()))
                }
            }
            registers[Register.errorCode] = sourceError != nil ? 1 : (live ? 0 : 2)
            registers[Register.missedTriggers] = UInt16(clamping: trigger?.missed ?? 0)
            let inputs = mapping.pointee.tab_input_bits!
            let busy = trigger?.inFlight != nil
            inputs[Input.ready] = live && sourceError == nil && !busy ? 1 : 0
            inputs[Input.busy] = busy ? 1 : 0
            inputs[Input.lastFailed] = last?.verdict == .fail ? 1 : 0
            inputs[Input.fault] = sourceError != nil ? 1 : 0
            mapping.pointee.tab_bits[Coil.trigger] = busy ? 1 : 0
        }
    }
}
