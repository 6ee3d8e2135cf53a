process TRAIN_SENCA {
    tag "${meta.id}"
    label 'process_gpu'

    input:
    tuple val(meta), path(spots), path(expr), path(graph), path(patches)

    output:
    tuple val(meta), path("${meta.id}.model.pt"), emit: model
    tuple val(meta), path("${meta.id}.embeddings.parquet"), emit: embeddings
    tuple val(meta), path("${meta.id}.train_log.parquet"), emit: train_log
    path "versions.yml", emit: versions

    script:
    def args = task.ext.args ?: ''
    def patches_arg = patches ? "--patches ${patches}" : ''
    """
    # torch, BLAS and numba use the CPUs Nextflow gave the task, not every core of the node
    export OMP_NUM_THREADS=${task.cpus} MKL_NUM_THREADS=${task.cpus} OPENBLAS_NUM_THREADS=${task.cpus} NUMBA_NUM_THREADS=${task.cpus}

    senca train-senca \\
        --spots ${spots} \\
        --expr ${expr} \\
        --graph ${graph} \\
        ${patches_arg} \\
        ${args} \\
        --outdir .

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        senca: \$(senca --version | sed 's/senca, version //')
    END_VERSIONS
    """

    stub:
    """
    touch ${meta.id}.model.pt ${meta.id}.embeddings.parquet ${meta.id}.train_log.parquet

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        senca: \$(senca --version | sed 's/senca, version //')
    END_VERSIONS
    """
}
