// The one place that calls oneDNN. Everything oneDNN-specific (descriptors,
// primitives, memory objects, the v2-style `*_desc_init` calls of oneDNN 2.6)
// lives in this folder, so a port to oneDNN 3.x touches these files only.
import CDNNL
import Synchronization

/// A oneDNN call that failed, with the call and oneDNN's status name.
public struct DNNLError: Error, CustomStringConvertible {
    public let call: String
    public let status: String
    public var description: String { "oneDNN \(call) failed: \(status)" }
}

@inline(__always)
func dnnlCheck(_ status: dnnl_status_t, _ call: @autoclosure () -> String) throws(DNNLError) {
    guard status != dnnl_success else { return }
    let name: String
    switch status {
    case dnnl_out_of_memory: name = "out of memory"
    case dnnl_invalid_arguments: name = "invalid arguments"
    case dnnl_unimplemented: name = "unimplemented (no kernel for these shapes or formats)"
    case dnnl_runtime_error: name = "runtime error"
    default: name = "status \(status.rawValue)"
    }
    throw DNNLError(call: call(), status: name)
}

/// Process-wide oneDNN settings.
public enum DNNLRuntime {
    private static let threadSetting = Atomic<Int>(0)

    /// Sets how many threads oneDNN's kernels use (OpenMP underneath), for
    /// every network in the process. OpenMP keeps the count per calling
    /// thread, so each run applies it on the thread it runs on.
    public static func setThreads(_ count: Int) {
        threadSetting.store(max(1, count), ordering: .relaxed)
        applyThreads()
    }

    /// Applies the setting on the calling thread; called before each run.
    static func applyThreads() {
        let setting = threadSetting.load(ordering: .relaxed)
        if setting > 0 { omp_set_num_threads(Int32(setting)) }
    }

    /// The CPU engine, made once.
    nonisolated(unsafe) static let engine: dnnl_engine_t = {
        var engine: dnnl_engine_t?
        let status = dnnl_engine_create(&engine, dnnl_cpu, 0)
        precondition(status == dnnl_success && engine != nil, "oneDNN has no CPU engine (status \(status.rawValue))")
        return engine!
    }()
}

/// A oneDNN stream: primitives run on it in order. One per network, used by
/// one thread at a time.
final class DNNLStream {
    let stream: dnnl_stream_t

    init() throws(DNNLError) {
        var stream: dnnl_stream_t?
        try dnnlCheck(dnnl_stream_create(&stream, DNNLRuntime.engine, dnnl_stream_default_flags.rawValue), "dnnl_stream_create")
        self.stream = stream!
    }

    func wait() throws(DNNLError) {
        try dnnlCheck(dnnl_stream_wait(stream), "dnnl_stream_wait")
    }

    deinit { dnnl_stream_destroy(stream) }
}

/// Memory layouts Loupe names. `any` lets a primitive choose.
enum Layout {
    case any, nchw, oihw, x

    var tag: dnnl_format_tag_t {
        switch self {
        case .any: dnnl_format_tag_any
        case .nchw: dnnl_nchw
        case .oihw: dnnl_oihw
        case .x: dnnl_x
        }
    }
}

enum Precision {
    case f32, bf16

    var type: dnnl_data_type_t {
        switch self {
        case .f32: dnnl_f32
        case .bf16: dnnl_bf16
        }
    }
}

/// A memory descriptor: shape, element type and layout.
struct TensorDesc: Equatable {
    fileprivate(set) var md: dnnl_memory_desc_t

    init(_ dims: [Int], _ layout: Layout, _ precision: Precision = .f32) throws(DNNLError) {
        var md = dnnl_memory_desc_t()
        let dims64 = dims.map(Int64.init)
        try dnnlCheck(
            dnnl_memory_desc_init_by_tag(&md, Int32(dims.count), dims64, precision.type, layout.tag), "dnnl_memory_desc_init_by_tag \(dims)"
        )
        self.md = md
    }

    fileprivate init(md: dnnl_memory_desc_t) { self.md = md }

    /// The same shape and layout (element strides, blocks) with another element type.
    func retyped(_ precision: Precision) -> TensorDesc {
        var md = self.md
        md.data_type = precision.type
        return TensorDesc(md: md)
    }

    /// The channel window `[offset, offset + count)` of an NCHW-shaped tensor, in place.
    func channels(_ offset: Int, _ count: Int) throws(DNNLError) -> TensorDesc {
        var parent = md
        var sub = dnnl_memory_desc_t()
        var dims = self.dims
        dims[1] = count
        var offsets = [Int](repeating: 0, count: dims.count)
        offsets[1] = offset
        try dnnlCheck(
            dnnl_memory_desc_init_submemory(&sub, &parent, dims.map(Int64.init), offsets.map(Int64.init)), "dnnl_memory_desc_init_submemory"
        )
        return TensorDesc(md: sub)
    }

    var dims: [Int] {
        withUnsafeBytes(of: md.dims) { raw in
            Array(raw.bindMemory(to: Int64.self).prefix(Int(md.ndims)).map(Int.init))
        }
    }

    var byteCount: Int {
        var copy = md
        return dnnl_memory_desc_get_size(&copy)
    }

    static func == (lhs: TensorDesc, rhs: TensorDesc) -> Bool {
        var a = lhs.md
        var b = rhs.md
        return dnnl_memory_desc_equal(&a, &b) != 0
    }
}

/// A oneDNN memory object that owns its buffer.
final class Tensor {
    let desc: TensorDesc
    let memory: dnnl_memory_t

    init(_ desc: TensorDesc) throws(DNNLError) {
        var md = desc.md
        var memory: dnnl_memory_t?
        try dnnlCheck(dnnl_memory_create(&memory, &md, DNNLRuntime.engine, loupe_dnnl_memory_allocate()), "dnnl_memory_create \(desc.dims)")
        self.desc = desc
        self.memory = memory!
        // oneDNN does not clear new memory; padded blocks must be zero.
        raw.initializeMemory(as: UInt8.self, repeating: 0, count: desc.byteCount)
    }

    convenience init(_ dims: [Int], _ layout: Layout) throws(DNNLError) {
        try self.init(TensorDesc(dims, layout))
    }

    /// A second view of `parent`'s buffer with another descriptor (a channel window).
    init(view desc: TensorDesc, of parent: Tensor) throws(DNNLError) {
        var md = desc.md
        var memory: dnnl_memory_t?
        try dnnlCheck(dnnl_memory_create(&memory, &md, DNNLRuntime.engine, parent.raw), "dnnl_memory_create (view)")
        self.desc = desc
        self.memory = memory!
        self.parent = parent
    }

    private var parent: Tensor?

    var raw: UnsafeMutableRawPointer {
        var handle: UnsafeMutableRawPointer?
        dnnl_memory_get_data_handle(memory, &handle)
        return handle!
    }

    /// The buffer as floats; only meaningful for f32 tensors in a plain layout.
    var floats: UnsafeMutableBufferPointer<Float> {
        UnsafeMutableBufferPointer(start: raw.assumingMemoryBound(to: Float.self), count: desc.byteCount / MemoryLayout<Float>.stride)
    }

    deinit { dnnl_memory_destroy(memory) }
}

/// What a primitive is given when it runs.
enum Arg {
    case src, dst, weights, bias, mean, variance, scale, shift, workspace
    case diffSrc, diffDst, diffWeights, diffBias, diffScale, diffShift
    case from, to
    case multipleSrc(Int)

    var code: Int32 {
        switch self {
        case .src, .from: DNNL_ARG_SRC
        case .dst, .to: DNNL_ARG_DST
        case .weights: DNNL_ARG_WEIGHTS
        case .bias: DNNL_ARG_BIAS
        case .mean: DNNL_ARG_MEAN
        case .variance: DNNL_ARG_VARIANCE
        case .scale: DNNL_ARG_SCALE
        case .shift: DNNL_ARG_SHIFT
        case .workspace: DNNL_ARG_WORKSPACE
        case .diffSrc: DNNL_ARG_DIFF_SRC
        case .diffDst: DNNL_ARG_DIFF_DST
        case .diffWeights: DNNL_ARG_DIFF_WEIGHTS
        case .diffBias: DNNL_ARG_DIFF_BIAS
        case .diffScale: DNNL_ARG_DIFF_SCALE
        case .diffShift: DNNL_ARG_DIFF_SHIFT
        case .multipleSrc(let index): DNNL_ARG_MULTIPLE_SRC + Int32(index)
        }
    }
}

/// Attributes: fused post-ops, reduced-precision math, accumulation.
struct Attributes {
    var relu = false
    var accumulate = false
    var bf16Math = false

    func make() throws(DNNLError) -> dnnl_primitive_attr_t? {
        guard relu || accumulate || bf16Math else { return nil }
        var attr: dnnl_primitive_attr_t?
        try dnnlCheck(dnnl_primitive_attr_create(&attr), "dnnl_primitive_attr_create")
        if relu || accumulate {
            var ops: dnnl_post_ops_t?
            try dnnlCheck(dnnl_post_ops_create(&ops), "dnnl_post_ops_create")
            defer { dnnl_post_ops_destroy(ops) }
            if accumulate { try dnnlCheck(dnnl_post_ops_append_sum(ops, 1), "dnnl_post_ops_append_sum") }
            if relu { try dnnlCheck(dnnl_post_ops_append_eltwise(ops, 1, dnnl_eltwise_relu, 0, 0), "dnnl_post_ops_append_eltwise") }
            try dnnlCheck(dnnl_primitive_attr_set_post_ops(attr, ops), "dnnl_primitive_attr_set_post_ops")
        }
        if bf16Math {
            try dnnlCheck(dnnl_primitive_attr_set_fpmath_mode(attr, dnnl_fpmath_mode_bf16), "dnnl_primitive_attr_set_fpmath_mode")
        }
        return attr
    }
}

/// A created primitive with its descriptor, ready to run.
final class Primitive {
    let name: String
    private let pd: dnnl_primitive_desc_t
    private let primitive: dnnl_primitive_t

    fileprivate init(_ name: String, pd: dnnl_primitive_desc_t) throws(DNNLError) {
        var primitive: dnnl_primitive_t?
        let status = dnnl_primitive_create(&primitive, pd)
        if status != dnnl_success { dnnl_primitive_desc_destroy(pd) }
        try dnnlCheck(status, "dnnl_primitive_create (\(name))")
        self.name = name
        self.pd = pd
        self.primitive = primitive!
    }

    /// Creates the primitive descriptor from a v2 op descriptor.
    fileprivate convenience init<Desc>(
        _ name: String, op: inout Desc, attributes: Attributes = Attributes(), hint: Primitive? = nil
    ) throws(DNNLError) {
        let attr = try attributes.make()
        defer { if let attr { dnnl_primitive_attr_destroy(attr) } }
        var pd: dnnl_primitive_desc_t?
        let status = withUnsafeMutablePointer(to: &op) { pointer in
            dnnl_primitive_desc_create(&pd, UnsafeRawPointer(pointer), attr, DNNLRuntime.engine, hint?.pd)
        }
        try dnnlCheck(status, "dnnl_primitive_desc_create (\(name))")
        try self.init(name, pd: pd!)
    }

    func desc(_ query: Query, _ index: Int32 = 0) -> TensorDesc {
        TensorDesc(md: dnnl_primitive_desc_query_md(pd, query.value, index).pointee)
    }

    enum Query {
        case src, dst, weights, diffSrc, diffDst, diffWeights, workspace

        var value: dnnl_query_t {
            switch self {
            case .src: dnnl_query_src_md
            case .dst: dnnl_query_dst_md
            case .weights: dnnl_query_weights_md
            case .diffSrc: dnnl_query_diff_src_md
            case .diffDst: dnnl_query_diff_dst_md
            case .diffWeights: dnnl_query_diff_weights_md
            case .workspace: dnnl_query_workspace_md
            }
        }
    }

    func run(_ stream: DNNLStream, _ args: [(Arg, Tensor)]) throws(DNNLError) {
        let execArgs = args.map { dnnl_exec_arg_t(arg: $0.0.code, memory: $0.1.memory) }
        try dnnlCheck(dnnl_primitive_execute(primitive, stream.stream, Int32(execArgs.count), execArgs), "dnnl_primitive_execute (\(name))")
    }

    deinit {
        dnnl_primitive_destroy(primitive)
        dnnl_primitive_desc_destroy(pd)
    }
}

/// `tensor` as a primitive wants it: itself when the layouts match, else a
/// new tensor in `desc` and the reorder that fills it from `tensor`.
func adapted(_ tensor: Tensor, to desc: TensorDesc) throws(DNNLError) -> (Tensor, Primitive?) {
    if desc == tensor.desc { return (tensor, nil) }
    return (try Tensor(desc), try Kernels.reorder(from: tensor.desc, to: desc))
}

/// Where a primitive writes in `desc` before the result lands in `tensor`:
/// `tensor` itself when the layouts match, else a new tensor and the reorder into `tensor`.
func staged(_ desc: TensorDesc, into tensor: Tensor) throws(DNNLError) -> (Tensor, Primitive?) {
    if desc == tensor.desc { return (tensor, nil) }
    return (try Tensor(desc), try Kernels.reorder(from: desc, to: tensor.desc))
}

// MARK: - Primitive builders (v2-style descriptors)

enum Kernels {
    private static let one: [Int64] = [1, 1]

    /// A square convolution with stride 1 and "same" padding.
    static func convolutionForward(
        src: TensorDesc, weights: TensorDesc, bias: TensorDesc?, dst: TensorDesc, padding: Int, training: Bool,
        attributes: Attributes = Attributes()
    ) throws(DNNLError) -> Primitive {
        var op = dnnl_convolution_desc_t()
        var s = src.md, w = weights.md, d = dst.md
        let pad: [Int64] = [Int64(padding), Int64(padding)]
        let status: dnnl_status_t
        if var b = bias?.md {
            status = dnnl_convolution_forward_desc_init(
                &op, training ? dnnl_forward_training : dnnl_forward_inference, dnnl_convolution_direct, &s, &w, &b, &d, one, pad, pad)
        } else {
            status = dnnl_convolution_forward_desc_init(
                &op, training ? dnnl_forward_training : dnnl_forward_inference, dnnl_convolution_direct, &s, &w, nil, &d, one, pad, pad)
        }
        try dnnlCheck(status, "dnnl_convolution_forward_desc_init")
        return try Primitive("convolution forward", op: &op, attributes: attributes)
    }

    static func convolutionBackwardData(
        diffSrc: TensorDesc, weights: TensorDesc, diffDst: TensorDesc, padding: Int, hint: Primitive
    ) throws(DNNLError) -> Primitive {
        var op = dnnl_convolution_desc_t()
        var s = diffSrc.md, w = weights.md, d = diffDst.md
        let pad: [Int64] = [Int64(padding), Int64(padding)]
        try dnnlCheck(
            dnnl_convolution_backward_data_desc_init(&op, dnnl_convolution_direct, &s, &w, &d, one, pad, pad),
            "dnnl_convolution_backward_data_desc_init")
        return try Primitive("convolution backward data", op: &op, hint: hint)
    }

    static func convolutionBackwardWeights(
        src: TensorDesc, diffWeights: TensorDesc, diffBias: TensorDesc?, diffDst: TensorDesc, padding: Int, hint: Primitive
    ) throws(DNNLError) -> Primitive {
        var op = dnnl_convolution_desc_t()
        var s = src.md, w = diffWeights.md, d = diffDst.md
        let pad: [Int64] = [Int64(padding), Int64(padding)]
        let status: dnnl_status_t
        if var b = diffBias?.md {
            status = dnnl_convolution_backward_weights_desc_init(&op, dnnl_convolution_direct, &s, &w, &b, &d, one, pad, pad)
        } else {
            status = dnnl_convolution_backward_weights_desc_init(&op, dnnl_convolution_direct, &s, &w, nil, &d, one, pad, pad)
        }
        try dnnlCheck(status, "dnnl_convolution_backward_weights_desc_init")
        return try Primitive("convolution backward weights", op: &op, hint: hint)
    }

    private static let normFlags = UInt32(dnnl_use_scale.rawValue | dnnl_use_shift.rawValue | dnnl_fuse_norm_relu.rawValue)

    /// Batch normalisation with scale and shift, followed by ReLU (fused).
    /// Training uses and returns batch statistics; it keeps a ReLU mask in the workspace.
    static func batchNormReLUForward(data: TensorDesc, epsilon: Float, training: Bool) throws(DNNLError) -> Primitive {
        var op = dnnl_batch_normalization_desc_t()
        var d = data.md
        var flags = normFlags
        if !training { flags |= UInt32(dnnl_use_global_stats.rawValue) }
        try dnnlCheck(
            dnnl_batch_normalization_forward_desc_init(&op, training ? dnnl_forward_training : dnnl_forward_inference, &d, epsilon, flags),
            "dnnl_batch_normalization_forward_desc_init")
        return try Primitive("batch norm + ReLU forward", op: &op)
    }

    static func batchNormReLUBackward(
        diffData: TensorDesc, data: TensorDesc, epsilon: Float, hint: Primitive
    ) throws(DNNLError) -> Primitive {
        var op = dnnl_batch_normalization_desc_t()
        var dd = diffData.md, d = data.md
        try dnnlCheck(
            dnnl_batch_normalization_backward_desc_init(&op, dnnl_backward, &dd, &d, epsilon, normFlags),
            "dnnl_batch_normalization_backward_desc_init")
        return try Primitive("batch norm + ReLU backward", op: &op, hint: hint)
    }

    /// 2x2 max pooling with stride 2.
    static func maxPoolForward(src: TensorDesc, dst: TensorDesc, training: Bool) throws(DNNLError) -> Primitive {
        var op = dnnl_pooling_desc_t()
        var s = src.md, d = dst.md
        let two: [Int64] = [2, 2], zero: [Int64] = [0, 0]
        try dnnlCheck(
            dnnl_pooling_forward_desc_init(
                &op, training ? dnnl_forward_training : dnnl_forward_inference, dnnl_pooling_max, &s, &d, two, two, zero, zero),
            "dnnl_pooling_forward_desc_init")
        return try Primitive("max pool forward", op: &op)
    }

    static func maxPoolBackward(diffSrc: TensorDesc, diffDst: TensorDesc, hint: Primitive) throws(DNNLError) -> Primitive {
        var op = dnnl_pooling_desc_t()
        var s = diffSrc.md, d = diffDst.md
        let two: [Int64] = [2, 2], zero: [Int64] = [0, 0]
        try dnnlCheck(
            dnnl_pooling_backward_desc_init(&op, dnnl_pooling_max, &s, &d, two, two, zero, zero), "dnnl_pooling_backward_desc_init")
        return try Primitive("max pool backward", op: &op, hint: hint)
    }

    /// Bilinear 2x upsampling (half-pixel centres, as PyTorch's
    /// `align_corners=False` and ONNX Resize's `half_pixel`).
    static func upsampleForward(src: TensorDesc, dst: TensorDesc, training: Bool) throws(DNNLError) -> Primitive {
        var op = dnnl_resampling_desc_t()
        var s = src.md, d = dst.md
        let factors: [Float] = [2, 2]
        try dnnlCheck(
            dnnl_resampling_forward_desc_init(
                &op, training ? dnnl_forward_training : dnnl_forward_inference, dnnl_resampling_linear, factors, &s, &d),
            "dnnl_resampling_forward_desc_init")
        return try Primitive("bilinear upsample forward", op: &op)
    }

    static func upsampleBackward(diffSrc: TensorDesc, diffDst: TensorDesc, hint: Primitive) throws(DNNLError) -> Primitive {
        var op = dnnl_resampling_desc_t()
        var s = diffSrc.md, d = diffDst.md
        let factors: [Float] = [2, 2]
        try dnnlCheck(
            dnnl_resampling_backward_desc_init(&op, dnnl_resampling_linear, factors, &s, &d), "dnnl_resampling_backward_desc_init")
        return try Primitive("bilinear upsample backward", op: &op, hint: hint)
    }

    /// Concatenation along channels; the destination layout is oneDNN's choice.
    static func concat(_ sources: [TensorDesc]) throws(DNNLError) -> Primitive {
        let mds = sources.map(\.md)
        var pd: dnnl_primitive_desc_t?
        try dnnlCheck(
            dnnl_concat_primitive_desc_create(&pd, nil, Int32(mds.count), 1, mds, nil, DNNLRuntime.engine),
            "dnnl_concat_primitive_desc_create")
        return try Primitive("concat", pd: pd!)
    }

    /// Copies between layouts (or precisions); `accumulate` adds into the destination.
    static func reorder(from: TensorDesc, to: TensorDesc, accumulate: Bool = false) throws(DNNLError) -> Primitive {
        var s = from.md, d = to.md
        let attr = try Attributes(accumulate: accumulate).make()
        defer { if let attr { dnnl_primitive_attr_destroy(attr) } }
        var pd: dnnl_primitive_desc_t?
        try dnnlCheck(
            dnnl_reorder_primitive_desc_create(&pd, &s, DNNLRuntime.engine, &d, DNNLRuntime.engine, attr),
            "dnnl_reorder_primitive_desc_create")
        return try Primitive("reorder", pd: pd!)
    }
}

extension DNNLRuntime {
    /// Whether this CPU runs bf16 convolutions natively (AVX512-BF16 or AMX).
    public static var hasNativeBF16: Bool {
        let isa = dnnl_get_effective_cpu_isa()
        return isa == dnnl_cpu_isa_avx512_core_bf16 || isa == dnnl_cpu_isa_avx512_core_amx
    }

    /// Whether this CPU can run bf16 convolutions at all: oneDNN 2.6 needs
    /// AVX-512 (natively with AVX512-BF16, emulated on plain AVX-512); an
    /// AVX2-only CPU has no bf16 kernel.
    public static var canRunBF16: Bool {
        let avx512 = dnnl_cpu_isa_avx512_core.rawValue
        return dnnl_get_effective_cpu_isa().rawValue & avx512 == avx512
    }

    /// The CPU instruction set oneDNN dispatches to, as oneDNN names it.
    public static var cpuISA: String {
        switch dnnl_get_effective_cpu_isa() {
        case dnnl_cpu_isa_avx512_core_amx: "avx512_core_amx"
        case dnnl_cpu_isa_avx512_core_bf16: "avx512_core_bf16"
        case dnnl_cpu_isa_avx512_core_vnni: "avx512_core_vnni"
        case dnnl_cpu_isa_avx512_core: "avx512_core"
        case dnnl_cpu_isa_avx2_vnni: "avx2_vnni"
        case dnnl_cpu_isa_avx2: "avx2"
        case dnnl_cpu_isa_avx: "avx"
        default: "sse41"
        }
    }
}
