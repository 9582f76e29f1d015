import CModbus
import Foundation

/// A PLC's side of Modbus TCP through libmodbus, as a line's controller
/// talks to a Loupe camera: the tests' PLC and `loupe demo`'s station share it.
public final class ModbusPLC: @unchecked Sendable {
    public let context: OpaquePointer

    public init(port: Int, host: String = "127.0.0.1") throws {
        guard let context = modbus_new_tcp(host, Int32(port)) else { throw LaunchError("modbus_new_tcp failed for \(host):\(port)") }
        self.context = context
        modbus_set_response_timeout(context, 2, 0)
        guard modbus_connect(context) == 0 else {
            let reason = Self.reason()
            modbus_free(context)
            throw LaunchError("the PLC cannot connect to \(host):\(port): \(reason)")
        }
    }

    deinit {
        modbus_close(context)
        modbus_free(context)
    }

    /// libmodbus's words for the last error.
    public static func reason() -> String { String(cString: modbus_strerror(loupe_modbus_errno())) }

    public func writeCoil(_ address: Int) throws {
        guard modbus_write_bit(context, Int32(address), 1) == 1 else { throw LaunchError("write coil \(address): \(Self.reason())") }
    }

    public func coil(_ address: Int) throws -> Bool {
        var bit: UInt8 = 0
        guard modbus_read_bits(context, Int32(address), 1, &bit) == 1 else { throw LaunchError("read coil \(address): \(Self.reason())") }
        return bit == 1
    }

    public func input(_ address: Int) throws -> Bool {
        var bit: UInt8 = 0
        guard modbus_read_input_bits(context, Int32(address), 1, &bit) == 1 else {
            throw LaunchError("read input \(address): \(Self.reason())")
        }
        return bit == 1
    }

    public func registers(_ address: Int, _ count: Int) throws -> [UInt16] {
        var values = [UInt16](repeating: 0, count: count)
        guard modbus_read_input_registers(context, Int32(address), Int32(count), &values) == Int32(count) else {
            throw LaunchError("read input registers \(address)+\(count): \(Self.reason())")
        }
        return values
    }

    /// A request expected to fail: -1 and the exception's errno, or the count.
    public func failing(_ body: (OpaquePointer) -> Int32) -> (Int32, Int32) {
        let rc = body(context)
        return (rc, loupe_modbus_errno())
    }
}
