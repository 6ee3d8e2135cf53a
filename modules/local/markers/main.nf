process MARKERS {
    tag "${meta.id}"
    label 'process_low'

    input:
    tuple val(meta), path(clusters), path(h5ad)

    output:
    tuple val(meta), path("${meta.id}.markers.parquet"), emit: markers
    tuple val(meta), path("${meta.id}.markers.png"), emit: figure
    path "versions.yml", emit: versions

    script:
    def args = task.ext.args ?: ''
    """
    # torch, BLAS and numba use the CPUs Nextflow gave the task, not every core of the node
    export OMP_NUM_THREADS=${task.cpus} MKL_NUM_THREADS=${task.cpus} OPENBLAS_NUM_THREADS=${task.cpus} NUMBA_NUM_THREADS=${task.cpus}

    senca markers \\
        --clusters ${clusters} \\
        --h5ad ${h5ad} \\
        ${args} \\
        --outdir .

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        senca: \$(senca --version | sed 's/senca, version //')
    END_VERSIONS
    """

    stub:
    """
    touch ${meta.id}.markers.parquet ${meta.id}.markers.png

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        senca: \$(senca --version | sed 's/senca, version //')
    END_VERSIONS
    """
}
