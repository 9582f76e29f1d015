import Foundation
import LoupeProto
import LoupeWire

/// One filled-in example of every message that can travel in an Envelope.
enum SampleMessages {
    static var all: [Envelope.OneOf_Body] {
        var hello = Loupe_V1_Hello()
        hello.protocolVersion = 1
        hello.softwareVersion = "cam-fw 2.3"
        hello.capabilities = ["roi-upload", "model-chunks"]
        hello.maxFrameBytes = 1 << 20
        var welcome = Loupe_V1_Welcome()
        welcome.protocolVersion = 1
        welcome.peerIdentity = "cam-7"
        welcome.peerRole = .agent
        welcome.heartbeatIntervalMs = 5000
        welcome.idleTimeoutMs = 15000
        welcome.maxFrameBytes = 16 << 20
        welcome.managerID = "plant-7"
        var error = Loupe_V1_Error()
        error.code = .frameTooLarge
        error.message = "frame of 99 bytes exceeds the limit of 10 bytes"
        var heartbeat = Loupe_V1_Heartbeat()
        heartbeat.sentAtUnixMs = 1_790_000_000_000
        heartbeat.sequence = 42
        var goodbye = Loupe_V1_Goodbye()
        goodbye.reason = "shutting down"
        var echo = Loupe_V1_Echo()
        echo.payload = Data((0..<300).map { UInt8($0 % 251) })
        var upload = Loupe_V1_RoiUpload()
        upload.contentSha256 = Data(repeating: 0xAB, count: 32)
        upload.inspectionType = "steel-strip"
        upload.roiName = "left-edge"
        upload.capturedAtUnixMs = 1_790_000_000_123
        upload.recipeVersion = "r12"
        upload.templateSha256 = Data(repeating: 0x01, count: 32)
        upload.imagePng = Data([0x89, 0x50, 0x4E, 0x47, 1, 2, 3])
        upload.maskPng = Data([0x89, 0x50, 0x4E, 0x47, 4, 5, 6])
        upload.classNames = ["background", "scratch", "spot"]
        var ack = Loupe_V1_RoiAck()
        ack.contentSha256 = upload.contentSha256
        ack.status = .duplicate
        var status = Loupe_V1_AgentStatus()
        status.framesPerSecond = 24.5
        status.latencyP50Ms = 11.2
        status.latencyP99Ms = 19.9
        status.passCount = 1000
        status.failCount = 7
        status.diskFreeBytes = 12_345_678_901
        status.outboxDepth = 3
        status.modelVersion = "m5"
        status.recipeVersion = "r12"
        status.softwareVersion = "loupe 0.1.0"
        status.uptimeSeconds = 3600
        var offer = Loupe_V1_ModelOffer()
        offer.modelVersion = "m6"
        offer.inspectionType = "steel-strip"
        offer.sizeBytes = 2_000_000
        offer.sha256 = Data(repeating: 0x22, count: 32)
        offer.signature = Data(repeating: 0x33, count: 64)
        offer.chunkBytes = 262_144
        var chunkRequest = Loupe_V1_ModelChunkRequest()
        chunkRequest.modelVersion = "m6"
        chunkRequest.offset = 262_144
        chunkRequest.length = 262_144
        var chunk = Loupe_V1_ModelChunk()
        chunk.modelVersion = "m6"
        chunk.offset = 262_144
        chunk.data = Data(repeating: 7, count: 1000)
        chunk.last = true
        var installed = Loupe_V1_ModelInstalled()
        installed.modelVersion = "m6"
        installed.ok = false
        installed.error = "signature does not verify"
        var start = Loupe_V1_TrainingStart()
        start.inspectionType = "steel-strip"
        start.iterations = 30
        start.timeBudgetSeconds = 600
        start.augmentation.flipHorizontal = true
        start.augmentation.rotationDegrees = 10
        start.augmentation.brightness = 0.1
        start.augmentation.contrast = 0.2
        start.seed = 7
        var progress = Loupe_V1_TrainingProgress()
        progress.jobID = "job-1"
        progress.state = .running
        progress.pass = 3
        progress.passesTotal = 30
        progress.loss = 0.25
        progress.imagesPerSecond = 12.5
        progress.etaSeconds = 90
        progress.validationMiou = 0.7
        progress.validationClassIou = [0.98, 0.6, 0.5]
        var cancel = Loupe_V1_TrainingCancel()
        cancel.jobID = "job-1"
        var query = Loupe_V1_FleetStatusQuery()
        query.inspectionType = "steel-strip"
        var camera = Loupe_V1_CameraStatus()
        camera.cameraID = "cam-7"
        camera.online = true
        camera.firstSeenUnixMs = 1
        camera.lastSeenUnixMs = 2
        camera.address = "10.0.0.7:51000"
        camera.softwareVersion = "loupe 0.1.0"
        camera.status = status
        var fleet = Loupe_V1_FleetStatusReply()
        fleet.cameras = [camera]
        var target = Loupe_V1_CameraTarget()
        target.cameras = ["cam-1", "cam-2"]
        var listQuery = Loupe_V1_ModelListQuery()
        listQuery.inspectionType = "steel-strip"
        var versionInfo = Loupe_V1_ModelVersionInfo()
        versionInfo.version = "steel-strip-v3"
        versionInfo.sha256 = Data(repeating: 3, count: 32)
        versionInfo.installedOn = ["cam-7"]
        var rollout = Loupe_V1_Rollout()
        rollout.rolloutID = "rollout-1"
        rollout.state = .canary
        rollout.canaryCameras = ["cam-1"]
        rollout.policy.automatic = true
        rollout.policy.maxDefectRateIncrease = 0.05
        var list = Loupe_V1_ModelListReply()
        list.versions = [versionInfo]
        list.rollouts = [rollout]
        var push = Loupe_V1_ModelPush()
        push.modelVersion = "steel-strip-v3"
        push.target = target
        push.canaryCameras = ["cam-1"]
        var pushReply = Loupe_V1_ModelPushReply()
        pushReply.cameras = ["cam-1"]
        pushReply.rollout = rollout
        var rollback = Loupe_V1_ModelRollback()
        rollback.target = target
        rollback.toVersion = "steel-strip-v2"
        var decision = Loupe_V1_RolloutDecision()
        decision.rolloutID = "rollout-1"
        decision.promote = true
        var jobsQuery = Loupe_V1_TrainingStatusQuery()
        jobsQuery.jobID = "job-1"
        var job = Loupe_V1_TrainingJob()
        job.jobID = "job-1"
        job.progress = progress
        job.history = [progress]
        var jobs = Loupe_V1_TrainingStatusReply()
        jobs.jobs = [job]
        var statsQuery = Loupe_V1_DatasetStatsQuery()
        statsQuery.inspectionType = "steel-strip"
        var dataset = Loupe_V1_DatasetStats()
        dataset.inspectionType = "steel-strip"
        dataset.rois = 12
        dataset.classPixels = [100, 20]
        dataset.cameraRois = ["cam-1": 12]
        var stats = Loupe_V1_DatasetStatsReply()
        stats.datasets = [dataset]
        var groupSet = Loupe_V1_CameraGroupSet()
        groupSet.name = "line-1"
        groupSet.cameras = ["cam-1"]
        var members = Loupe_V1_CameraGroupMembers()
        members.cameras = ["cam-1"]
        var groups = Loupe_V1_CameraGroupList()
        groups.groups = ["line-1": members]
        var claim = Loupe_V1_WorkClaim()
        claim.waitMs = 20_000
        var assignment = Loupe_V1_WorkAssignment()
        assignment.jobID = "job-1"
        assignment.request = start
        assignment.leaseMs = 30_000
        assignment.attempt = 2
        assignment.rois = 12
        assignment.classNames = ["background", "scratch"]
        assignment.requester = "cam-1"
        var pageQuery = Loupe_V1_DatasetPageQuery()
        pageQuery.jobID = "job-1"
        pageQuery.after = String(repeating: "ab", count: 32)
        pageQuery.limit = 64
        var item = Loupe_V1_DatasetItem()
        item.contentSha256 = String(repeating: "cd", count: 32)
        item.cameraID = "cam-1"
        item.imagePng = upload.imagePng
        item.maskPng = upload.maskPng
        var page = Loupe_V1_DatasetPage()
        page.items = [item]
        page.last = true
        var report = Loupe_V1_WorkProgress()
        report.jobID = "job-1"
        report.updates = [progress]
        var lease = Loupe_V1_WorkLease()
        lease.jobID = "job-1"
        lease.leaseMs = 30_000
        lease.cancelRequested = true
        var result = Loupe_V1_WorkResult()
        result.jobID = "job-1"
        result.offset = 4 << 20
        result.data = Data([1, 2, 3])
        result.last = true
        result.sha256 = String(repeating: "ef", count: 32)
        return [
            .workClaim(claim), .workAssignment(assignment), .datasetPageQuery(pageQuery), .datasetPage(page), .workProgress(report),
            .workLease(lease), .workResult(result),
            .modelListQuery(listQuery), .modelListReply(list), .modelPush(push), .modelPushReply(pushReply), .modelRollback(rollback),
            .rolloutDecision(decision), .trainingStatusQuery(jobsQuery), .trainingStatusReply(jobs), .datasetStatsQuery(statsQuery),
            .datasetStatsReply(stats), .cameraGroupSet(groupSet), .cameraGroupList(groups),
            .hello(hello), .welcome(welcome), .error(error), .heartbeat(heartbeat), .goodbye(goodbye), .echo(echo),
            .roiUpload(upload), .roiAck(ack), .agentStatus(status),
            .modelOffer(offer), .modelChunkRequest(chunkRequest), .modelChunk(chunk), .modelInstalled(installed),
            .trainingStart(start), .trainingProgress(progress), .trainingCancel(cancel),
            .fleetStatusQuery(query), .fleetStatusReply(fleet),
        ]
    }
}

/// Where the repository is, from this file's path.
enum Repository {
    static var root: String {
        var url = URL(fileURLWithPath: #filePath)
        for _ in 0..<4 { url.deleteLastPathComponent() }
        return url.path
    }
}
