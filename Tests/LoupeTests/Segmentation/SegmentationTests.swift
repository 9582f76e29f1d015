import Testing

/// The segmentation suites run one test at a time on one oneDNN thread, so
/// the CPU-heavy kernels leave room for the timing-sensitive network tests
/// running beside them on these 2-core machines.
@Suite(.serialized) struct SegmentationTests {}
