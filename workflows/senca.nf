/*
 * The per-slide DAG (ARCHITECTURE.md), run for every slide of the cohort in parallel.
 *
 *   PREPROCESS -> EMBED_PATCHES (slides with an image) -> TRAIN_SENCA -> CLUSTER -> MARKERS
 *                                                                          \-> EVALUATE (cohort)
 *
 * Every channel is keyed by the slide's `meta` map (meta.id = samplesheet `sample`), so each slide
 * moves on as soon as its own inputs are ready, and a slide whose task failed (and was ignored,
 * see conf/base.config) simply drops out: the others go on, and the slides that did not reach the
 * end are emitted on `incomplete` for the closing report. So a join whose sides may differ (one
 * slide failed, or took the other route) keeps the unmatched keys (remainder: true) and drops them
 * itself: the same in strict mode, where a plain join fails on any unmatched key (and where an
 * explicit `failOnMismatch: false` does not help). Only outputs of one task join plainly.
 */

include { PREPROCESS    } from '../modules/local/preprocess/main'
include { EMBED_PATCHES } from '../modules/local/embed_patches/main'
include { TRAIN_SENCA   } from '../modules/local/train_senca/main'
include { CLUSTER       } from '../modules/local/cluster/main'
include { MARKERS       } from '../modules/local/markers/main'
include { EVALUATE      } from '../modules/local/evaluate/main'

workflow SENCA {
    take:
    ch_slides         // [meta, data, image, positions, labels]: files, or [] where the samplesheet has none
                      // (meta.image_choice: the samplesheet's hires / lowres / none keyword, where it has one)
    ch_weights        // value channel: the encoder weights file, or [] for the encoder's default

    main:
    PREPROCESS(ch_slides)

    // The H&E each slide's patches are cut from is exactly the one preprocess chose and scaled the
    // spot coordinates into (after image QC and its fallback, or the explicit choice), emitted beside
    // its outputs as {s}.chosen_image.<ext>; nothing is guessed before preprocessing. A slide whose
    // preprocess chose none gets the marker {s}.chosen_image.none instead and runs image-less
    // (train-senca without --patches). Every preprocess emits exactly one chosen_image, so these are
    // outputs of one task (a plain join) and each slide's route is known as soon as its own
    // preprocess ends: no slide waits for the rest of the cohort.
    ch_routed = PREPROCESS.out.spots
        .join(PREPROCESS.out.chosen_image)
        .branch { _meta, _spots, image ->
            imageless: image.name.endsWith('.chosen_image.none')
            with_image: true
        }

    EMBED_PATCHES(ch_routed.with_image, ch_weights)

    // outputs of the same task: always all three, or none
    ch_preprocessed = PREPROCESS.out.spots
        .join(PREPROCESS.out.expr)
        .join(PREPROCESS.out.graph)
    // each slide takes one route: with patches (unless embed-patches failed) or image-less
    ch_train = ch_preprocessed
        .join(EMBED_PATCHES.out.patches, remainder: true)
        .mix(ch_preprocessed.join(ch_routed.imageless.map { meta, _spots, _image -> [meta, []] }, remainder: true))
        .filter { row -> !row.contains(null) }
    TRAIN_SENCA(ch_train)

    ch_image_or_none = ch_routed.with_image
        .map { meta, _spots, image -> [meta, image] }
        .mix(ch_routed.imageless.map { meta, _spots, _image -> [meta, []] })
    // slides whose training failed are on the right-hand sides only
    CLUSTER(
        TRAIN_SENCA.out.embeddings
            .join(PREPROCESS.out.spots.join(PREPROCESS.out.h5ad), remainder: true)
            .join(ch_image_or_none, remainder: true)
            .filter { row -> !row.contains(null) }
    )

    MARKERS(
        CLUSTER.out.clusters
            .join(PREPROCESS.out.h5ad, remainder: true)
            .filter { row -> !row.contains(null) }
    )

    // The cohort summary waits for every slide; the report embeds the figures and markers staged
    // beside each clusters file (collect flattens the per-slide lists into one list of files).
    ch_beside = CLUSTER.out.figures
        .map { _meta, clusters_png, umap_png, dendrogram_png -> [clusters_png, umap_png, dendrogram_png] }
        .mix(MARKERS.out.markers.map { _meta, markers -> [markers] })
        .mix(MARKERS.out.figure.map { _meta, markers_png -> [markers_png] })
        .mix(EMBED_PATCHES.out.qc.map { _meta, qc_png -> [qc_png] })
        .collect()
        .ifEmpty([])
    // Every stage task's versions.yml, one copy per distinct content, shown in the report.
    ch_stage_versions = PREPROCESS.out.versions
        .mix(EMBED_PATCHES.out.versions, TRAIN_SENCA.out.versions, CLUSTER.out.versions, MARKERS.out.versions)
        .map { file -> file.text }
        .unique()
        .collectFile(name: 'collated_versions.yml', newLine: true, sort: true)
    // No slide clustered (every one failed, each failure ignored): the run fails, it does not
    // report success with no summary.
    ch_all_clusters = CLUSTER.out.clusters
        .map { _meta, clusters -> clusters }
        .collect()
        .ifEmpty { error("senca-st: no slide finished: every slide had a failed task (see the 'Error is ignored' lines above)") }
    EVALUATE(ch_all_clusters, ch_beside, ch_stage_versions)

    // Slides that did not reach the end (a task failed and was ignored).
    ch_incomplete = ch_slides
        .map { meta, _data, _image, _positions, _labels -> [meta.id, meta] }
        .join(MARKERS.out.markers.map { meta, _markers -> [meta.id, true] }, remainder: true)
        .filter { _id, _meta, done -> done == null }
        .map { id, _meta, _done -> id }

    ch_versions = PREPROCESS.out.versions
        .mix(EMBED_PATCHES.out.versions, TRAIN_SENCA.out.versions, CLUSTER.out.versions,
             MARKERS.out.versions, EVALUATE.out.versions)

    emit:
    clusters   = CLUSTER.out.clusters
    h5ad       = CLUSTER.out.h5ad
    markers    = MARKERS.out.markers
    summary    = EVALUATE.out.csv
    report     = EVALUATE.out.report
    incomplete = ch_incomplete
    versions   = ch_versions
}
