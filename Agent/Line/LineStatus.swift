/// The line links' state, in `GET /api/v1/live` and on the page; each part
/// absent when its link is not configured.
public struct LineStatus: Codable, Sendable, Equatable {
    public var modbus: ModbusStatistics?
    public var mqtt: MQTTStatistics?

    public init() {}
}

/// The Modbus TCP server's state.
public struct ModbusStatistics: Codable, Sendable, Equatable {
    /// Where it listens, once it does.
    public var address: String?
    /// PLCs and panels connected now.
    public var clients = 0
    /// Requests answered since the agent started.
    public var requests = 0
}
