#!/usr/bin/env nextflow
/*
 * senca-st: tissue regions in cancer slides from spatial transcriptomics and H&E (SENCA-st).
 *
 *   nextflow run main.nf -profile test,docker --outdir results            # the bundled demo
 *   nextflow run main.nf -profile gpu,singularity,slurm --input samplesheet.csv --outdir results
 *
 * Checks every parameter against nextflow_schema.json, the container images against the engine,
 * and the whole samplesheet (every bad row at once) before any task starts, prints a parameter
 * summary, then runs workflows/senca.nf for every slide. `--help` lists the parameters
 * (`--helpFull`, `--showHidden`: all of them). Outputs and first runs: see docs/nextflow.md.
 */

include { validateParameters; paramsSummaryLog; samplesheetToList } from 'plugin/nf-schema'
include { SENCA } from './workflows/senca'

workflow {
    validateParameters()
    log.info(paramsSummaryLog(workflow))
    def image_problem = containerProblem(workflow.containerEngine, workflow.profile, params.container, params.container_gpu)
    if( image_problem )
        error(image_problem)
    removeStaleListing("${params.outdir}/pipeline_info/incomplete_samples.txt")

    ch_slides = channel.fromList(readSamplesheet(params.input))
    ch_weights = channel.value(params.weights && params.weights != 'random' ? file(params.weights, checkIfExists: true) : [])
    SENCA(ch_slides, ch_weights)

    SENCA.out.versions
        .map { versions -> versions.text.trim() }
        .unique()
        .mix(channel.of("Workflow:\n    senca-st: ${workflow.manifest.version}\n    Nextflow: ${nextflow.version}"))
        .collectFile(name: 'software_versions.yml', storeDir: "${params.outdir}/pipeline_info", newLine: true, sort: true)

    SENCA.out.incomplete
        .collectFile(name: 'incomplete_samples.txt', storeDir: "${params.outdir}/pipeline_info", newLine: true, sort: true)
        .subscribe { listing -> log.warn("Slides that did not finish (a task failed; see the 'Error is ignored' lines above): ${listing.text.readLines().join(', ')}") }

    workflow.onComplete {
        def ignored = workflow.stats.ignoredCount
        log.info(workflow.success && ignored == 0
            ? "senca-st: done; results in ${params.outdir} (per slide: <outdir>/<sample>/, cohort: <outdir>/summary/report.html)"
            : workflow.success
            ? "senca-st: done with ${ignored} failed task(s) ignored; the slides concerned are listed in ${params.outdir}/pipeline_info/incomplete_samples.txt"
            : "senca-st: failed: ${workflow.errorMessage}")
    }
}

/*
 * The samplesheet as PREPROCESS's inputs, one per slide: [meta, data, image, positions, labels]
 * (files, or [] where absent). An `image` cell may instead be a keyword, as senca's own samplesheet
 * reader takes it: hires, lowres or none (which of a Space Ranger / .h5ad slide's own images, or
 * image-less) goes to preprocess as meta.image_choice; auto is the same as an empty cell. Which image
 * a slide finally uses is preprocess's to decide (image QC, fallback), not this function's.
 * nf-schema checks each row's shape (assets/schema_input.json); here relative paths are resolved
 * against the samplesheet's own folder (as `senca preprocess --samplesheet` does) and every
 * missing file is reported at once.
 */
def readSamplesheet(input) {
    def sheet = file(input, checkIfExists: true)
    def rows = samplesheetToList(sheet, "${projectDir}/assets/schema_input.json")
    def problems = []
    def slides = rows.collect { row ->
        // nf-schema types every cell it can: sample 151673 arrives as an Integer. Every channel is
        // keyed by meta.id and every file named by it, so it is text from here on. A whole number
        // written as a decimal (1e5, 2.) arrives as a BigDecimal whose text is not the sheet's.
        def id = row[0].id
        if( !(id instanceof CharSequence || id instanceof Integer || id instanceof Long || id instanceof BigInteger) )
            problems << "sample ${id}: reads as a number (nf-schema types every cell), so its text is lost: add a letter to the id"
        def keyword = imageKeyword(row[2])
        def meta = row[0] + [id: id.toString()] + (keyword && keyword != 'auto' ? [image_choice: keyword] : [:])
        def paths = ['data', 'image', 'positions', 'labels'].withIndex().collectEntries { column, i ->
            def path = row[i + 1] && !(column == 'image' && keyword) ? resolveAgainst(sheet.parent, row[i + 1].toString()) : null
            if( path != null && !path.exists() )
                problems << "sample ${meta.id}: ${column} not found: ${path}"
            [(column): path]
        }
        [meta, paths.data, paths.image ?: [], paths.positions ?: [], paths.labels ?: []]
    }
    if( problems )
        error("Samplesheet ${sheet}: ${problems.size()} problem(s):\n  " + problems.join('\n  '))
    return slides
}

// An `image` cell's keyword (senca.io.samplesheet.IMAGE_CHOICES, any case), lower-cased; null for a file or none.
def imageKeyword(cell) {
    def text = cell instanceof CharSequence ? cell.toString().trim().toLowerCase() : ''
    return text in ['auto', 'hires', 'lowres', 'none'] ? text : null
}

// An absolute path or URL as given, a relative one from the samplesheet's folder.
def resolveAgainst(base, String value) {
    return value.startsWith('/') || value.contains('://') ? file(value) : base.resolve(value)
}

/*
 * Why the container engine cannot get the images the tasks will run, in one line naming the param
 * to set; null when it can. Docker runs a local name (`senca containers build` makes them), but
 * Singularity and Apptainer turn a bare name such as `senca-st:0.1.0` into
 * docker://senca-st:0.1.0 on Docker Hub, where no such image exists. Usable there: a registry or
 * Docker Hub namespace in the name (registry.example.org/senca-st:0.1.0), a URI (docker://,
 * oras://, library://...), or an image file (.sif). The CUDA image counts only under -profile gpu.
 */
def containerProblem(engine, profile, container, containerGpu) {
    if( !(engine in ['singularity', 'apptainer']) )
        return null
    def images = [container: container]
    if( 'gpu' in (profile ?: '').tokenize(',') )
        images.container_gpu = containerGpu
    def bare = images.findAll { _param, image -> image && !pullableImage(image.toString()) }
    if( !bare )
        return null
    def named = bare.collect { param, image -> "--${param} ${image}" }.join(', ')
    return "${engine} cannot pull ${named}: a name without a registry means Docker Hub, where it does not exist. Push the images to your registry (or build .sif files) and pass them: ${bare.keySet().collect { param -> "--${param}" }.join(' and ')} (docs/nextflow.md, 'First run')"
}

// An image Singularity/Apptainer can get: a file, a URI, or a name with a registry or namespace.
def pullableImage(String image) {
    if( image.startsWith('/') || image.startsWith('file://') || image =~ /^[A-Za-z][A-Za-z0-9+.-]*:\/\// )
        return true
    if( image.endsWith('.sif') || image.endsWith('.img') )
        return file(image).exists()
    return image.contains('/')
}

/*
 * The previous run's list of unfinished slides: removed before this one starts, so a -resume that
 * finishes every slide leaves none behind (the list is written again when some slide fails).
 */
def removeStaleListing(path) {
    def listing = file(path)
    if( listing.exists() ) {
        listing.delete()
        log.info("senca-st: removed the previous run's ${listing.name}")
    }
}
