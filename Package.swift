// swift-tools-version:6.1
import PackageDescription

/// Compiler-enforced habits shared by every Loupe target.
let strictSettings: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("MemberImportVisibility"),
    // A module's imports are its own unless it says `public import`: what a module shows of another is decided where
    // it is imported.
    .enableUpcomingFeature("InternalImportsByDefault"),
]

/// The pixel and tensor loops are optimised in debug builds too: unoptimised
/// they run 10–50x slower, which makes the test run and `loupe demo` from a
/// debug build crawl.
let computeSettings: [SwiftSetting] = strictSettings + [.unsafeFlags(["-O"], .when(configuration: .debug))]

/// `LOUPE_FUZZ=1` (Tests/Fuzz/run, in its own scratch path) instruments the
/// fuzzed modules for libFuzzer; normal builds are untouched.
let fuzzing = Context.environment["LOUPE_FUZZ"] == "1"
let fuzzSettings: [SwiftSetting] = fuzzing ? [.unsafeFlags(["-sanitize=fuzzer"])] : []

let package = Package(
    name: "Loupe",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "loupe", targets: ["loupe"])
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-protobuf.git", from: "1.39.0"),
        .package(url: "https://github.com/apple/swift-certificates.git", from: "1.21.1"),
        .package(url: "https://github.com/apple/swift-crypto.git", "3.12.3"..<"5.0.0"),
        .package(url: "https://github.com/apple/swift-asn1.git", from: "1.7.4"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/groue/GRDB.swift.git", from: "7.10.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1"),
        .package(url: "https://github.com/apple/swift-http-types.git", from: "1.8.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        .package(url: "https://github.com/vapor/postgres-nio.git", from: "1.33.2"),
    ],
    targets: [
        // Generated protobuf code for the wire protocol (Proto/loupe.proto).
        .target(
            name: "LoupeProto",
            dependencies: [.product(name: "SwiftProtobuf", package: "swift-protobuf")],
            swiftSettings: strictSettings + fuzzSettings
        ),
        // C libraries, from Debian packages.
        .systemLibrary(name: "CSPNG", path: "Sources/CSPNG", pkgConfig: "spng", providers: [.apt(["libspng-dev"])]),
        .systemLibrary(name: "CTurboJPEG", path: "Sources/CTurboJPEG", pkgConfig: "libturbojpeg", providers: [.apt(["libturbojpeg0-dev"])]),
        .systemLibrary(
            name: "CAravis", path: "Sources/CAravis", pkgConfig: "aravis-0.8", providers: [.apt(["libaravis-dev", "libusb-1.0-0-dev"])]),
        .systemLibrary(name: "CModbus", path: "Sources/CModbus", pkgConfig: "libmodbus", providers: [.apt(["libmodbus-dev"])]),
        .systemLibrary(name: "CMosquitto", path: "Sources/CMosquitto", pkgConfig: "libmosquitto", providers: [.apt(["libmosquitto-dev"])]),
        .systemLibrary(name: "CV4L2", path: "Sources/CV4L2", pkgConfig: "libv4l2", providers: [.apt(["libv4l-dev"])]),
        .systemLibrary(name: "CDNNL", path: "Sources/CDNNL", providers: [.apt(["libdnnl-dev"])]),
        // The segmentation engine: U-Net on oneDNN, training, inference, model files.
        .target(
            name: "LoupeSegmentation",
            dependencies: [
                "CDNNL", "LoupeImaging", "LoupeProto", "LoupeStorage", "LoupeVision", .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
            ],
            swiftSettings: computeSettings
        ),
        // Images: types, PNG/JPEG codecs, geometry.
        .target(
            name: "LoupeImaging",
            dependencies: ["CSPNG", "CTurboJPEG"],
            swiftSettings: computeSettings + fuzzSettings
        ),
        // The rules every store shares (agent and manager): content-addressed blob files written durably, SQLite
        // opening and its errors, the error type, fleet names, hex.
        .target(
            name: "LoupeStorage",
            dependencies: [.product(name: "Crypto", package: "swift-crypto"), .product(name: "GRDB", package: "GRDB.swift")],
            swiftSettings: strictSettings
        ),
        // Frame sources: GenICam cameras (Aravis), V4L2 cameras, file import, the synthetic camera.
        .target(
            name: "LoupeCapture",
            dependencies: ["LoupeImaging", "CV4L2", "CAravis"],
            swiftSettings: computeSettings
        ),
        // What happens to pixels around the segmenter: aligner, ROIs, wand, mask tools.
        .target(
            name: "LoupeVision",
            dependencies: ["LoupeImaging"],
            swiftSettings: computeSettings
        ),
        // Fleet PKI: CA, certificates with roles, revocation list.
        .target(
            name: "LoupePKI",
            dependencies: [
                "LoupeStorage",
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
            ],
            swiftSettings: strictSettings
        ),
        // Length-prefixed frames, envelopes and the wire's errors: no TLS, so
        // the fuzz targets (Fuzz/) build it with little else.
        .target(
            name: "LoupeFraming",
            dependencies: [
                "LoupeProto",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
            ],
            swiftSettings: strictSettings + fuzzSettings
        ),
        // Mutual TLS and the request/reply connection, over LoupeFraming.
        .target(
            name: "LoupeWire",
            dependencies: [
                "LoupeFraming",
                "LoupeProto",
                "LoupePKI",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOTLS", package: "swift-nio"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strictSettings
        ),
        // The plant's fleet manager service.
        .target(
            name: "LoupeManager",
            dependencies: [
                "LoupeWire", "LoupeProto", "LoupePKI", "LoupeImaging", "LoupeSegmentation", "LoupeStorage",
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
            ],
            path: "Manager",
            swiftSettings: strictSettings
        ),
        // The per-camera agent service.
        .target(
            name: "LoupeAgent",
            dependencies: [
                "LoupeWire", "LoupeProto", "LoupePKI", "LoupeImaging", "LoupeCapture", "LoupeVision", "LoupeSegmentation", "LoupeStorage",
                "CModbus",
                "CMosquitto",
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdTLS", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "CryptoExtras", package: "swift-crypto"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            path: "Agent",
            // The Label & Train page, compiled into the binary (PackageResources).
            resources: [
                .embedInCode("Web/index.html"), .embedInCode("Web/app.css"), .embedInCode("Web/app.js"),
                .embedInCode("Web/editor.js"), .embedInCode("Web/recipe.js"),
            ],
            swiftSettings: strictSettings
        ),
        // Benchmarks that `loupe bench` runs.
        // The one harness: a local fleet PKI and an in-process manager, for the tests, `loupe bench` and `loupe demo`.
        .target(
            name: "LoupeTesting",
            dependencies: [
                "LoupePKI", "LoupeProto", "LoupeWire", "LoupeManager", "LoupeStorage", "CModbus",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strictSettings
        ),
        .target(
            name: "LoupeBench",
            dependencies: [
                "LoupeTesting", "LoupeWire", "LoupeProto", "LoupePKI", "LoupeManager", "LoupeAgent", "LoupeImaging", "LoupeCapture",
                "LoupeVision", "LoupeSegmentation",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ],
            swiftSettings: strictSettings
        ),
        // The one binary: `loupe agent`, `loupe manager`, `loupe tls …`, `loupe bench …`.
        .executableTarget(
            name: "loupe",
            dependencies: [
                "LoupeWire", "LoupePKI", "LoupeManager", "LoupeAgent", "LoupeBench", "LoupeTesting", "LoupeProto", "LoupeSegmentation",
                "LoupeImaging",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            swiftSettings: strictSettings
        ),
        // libFuzzer targets (the frame and envelope decoders, PNG, JPEG); without
        // LOUPE_FUZZ=1, a replay of the committed corpus (Tests/Fuzz/README.md).
        .executableTarget(
            name: "LoupeFuzz",
            dependencies: [
                "LoupeFraming", "LoupeImaging", "LoupeProto", .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"), .product(name: "SwiftProtobuf", package: "swift-protobuf"),
            ],
            path: "Tests/Fuzz/LoupeFuzz",
            swiftSettings: strictSettings
                + (fuzzing ? [.unsafeFlags(["-sanitize=fuzzer", "-parse-as-library"]), .define("LOUPE_FUZZ")] : []),
            linkerSettings: fuzzing ? [.unsafeFlags(["-sanitize=fuzzer"])] : []
        ),
        .testTarget(
            name: "LoupeTests",
            dependencies: [
                "LoupeWire", "LoupePKI", "LoupeProto", "LoupeManager", "LoupeAgent", "LoupeBench", "LoupeImaging", "LoupeCapture",
                "LoupeVision", "LoupeSegmentation", "LoupeStorage", "CModbus",
                "CMosquitto", "LoupeTesting",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "HummingbirdTesting", package: "hummingbird"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            path: "Tests/LoupeTests",
            swiftSettings: strictSettings
        ),
    ]
)
