process EMBED_PATCHES {
    tag "${meta.id}"
    label 'process_gpu'

    input:
    tuple val(meta), path(spots), path(image, stageAs: 'image/*')
    path(weights, stageAs: 'weights/*')

    output:
    tuple val(meta), path("${meta.id}.patches.parquet"), emit: patches
    tuple val(meta), path("${meta.id}.patches_qc.png"), emit: qc
    path "versions.yml", emit: versions

    script:
    def args = task.ext.args ?: ''
    def weights_arg = weights ? "--weights ${weights}" : ''
    """
    # torch, BLAS and numba use the CPUs Nextflow gave the task, not every core of the node
    export OMP_NUM_THREADS=${task.cpus} MKL_NUM_THREADS=${task.cpus} OPENBLAS_NUM_THREADS=${task.cpus} NUMBA_NUM_THREADS=${task.cpus}

    senca embed-patches \\
        --spots ${spots} \\
        --image ${image} \\
        ${weights_arg} \\
        ${args} \\
        --outdir .

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        senca: \$(senca --version | sed 's/senca, version //')
    END_VERSIONS
    """

    stub:
    """
    touch ${meta.id}.patches.parquet ${meta.id}.patches_qc.png

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        senca: \$(senca --version | sed 's/senca, version //')
    END_VERSIONS
    """
}
