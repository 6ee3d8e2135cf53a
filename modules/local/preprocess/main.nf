process PREPROCESS {
    tag "${meta.id}"
    label 'process_medium'

    input:
    tuple val(meta), path(data, stageAs: 'data/*'), path(image, stageAs: 'image/*'), path(positions, stageAs: 'positions/*'), path(labels, stageAs: 'labels/*')

    output:
    tuple val(meta), path("${meta.id}.spots.parquet"), emit: spots
    tuple val(meta), path("${meta.id}.expr.parquet"), emit: expr
    tuple val(meta), path("${meta.id}.graph.parquet"), emit: graph
    tuple val(meta), path("${meta.id}.h5ad"), emit: h5ad
    tuple val(meta), path("${meta.id}.image.png"), emit: image, optional: true
    tuple val(meta), path("${meta.id}.chosen_image.*"), emit: chosen_image  // the chosen image, or the marker {s}.chosen_image.none
    path "versions.yml", emit: versions

    script:
    def args = task.ext.args ?: ''
    // the samplesheet's image file, else its keyword (hires, lowres, none: meta.image_choice); a
    // keyword or file here wins over the run-wide --image-choice of ext.args, as in `senca run`
    def image_arg = image ? "--image ${image}" : (meta.image_choice ? "--image ${meta.image_choice}" : '')
    def positions_arg = positions ? "--positions ${positions}" : ''
    def labels_arg = labels ? "--labels ${labels}" : ''
    def n_clusters_arg = meta.n_clusters ? "--n-clusters ${meta.n_clusters}" : ''
    """
    # torch, BLAS and numba use the CPUs Nextflow gave the task, not every core of the node
    export OMP_NUM_THREADS=${task.cpus} MKL_NUM_THREADS=${task.cpus} OPENBLAS_NUM_THREADS=${task.cpus} NUMBA_NUM_THREADS=${task.cpus}

    senca preprocess \\
        --sample ${meta.id} \\
        --data ${data} \\
        ${image_arg} \\
        ${positions_arg} \\
        ${labels_arg} \\
        ${n_clusters_arg} \\
        ${args} \\
        --export-image \\
        --outdir .

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        senca: \$(senca --version | sed 's/senca, version //')
    END_VERSIONS
    """

    stub:
    def args = task.ext.args ?: ''
    def keyword = meta.image_choice ?: 'auto'
    def own_image = image ? 'yes' : ''
    """
    touch ${meta.id}.spots.parquet ${meta.id}.expr.parquet ${meta.id}.graph.parquet ${meta.id}.h5ad
    # the image a real run would choose, without its QC: none when asked for, else the slide's own
    # file or an outs/spatial image (an .h5ad's own image is not looked for here); where a real run
    # would choose none, the marker it writes
    case "${keyword} ${args} " in
        "none "* | "auto "*"--image-choice none "*) echo 'image-less: stub run' > ${meta.id}.chosen_image.none ;;
        *) if [ -n "${own_image}" ] || [ -d "${data}/spatial" ]; then touch ${meta.id}.chosen_image.png
           else echo 'image-less: stub run' > ${meta.id}.chosen_image.none; fi ;;
    esac

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        senca: \$(senca --version | sed 's/senca, version //')
    END_VERSIONS
    """
}
