process CLUSTER {
    tag "${meta.id}"
    label 'process_low'

    input:
    tuple val(meta), path(embeddings), path(spots), path(h5ad), path(image, stageAs: 'image/*')

    output:
    tuple val(meta), path("${meta.id}.clusters.parquet"), emit: clusters
    tuple val(meta), path("${meta.id}.senca.h5ad"), emit: h5ad
    tuple val(meta), path("${meta.id}.clusters.png"), path("${meta.id}.umap.png"), path("${meta.id}.dendrogram.png"), emit: figures
    path "versions.yml", emit: versions

    script:
    def args = task.ext.args ?: ''
    def image_arg = image ? "--image ${image}" : ''
    """
    # torch, BLAS and numba use the CPUs Nextflow gave the task, not every core of the node
    export OMP_NUM_THREADS=${task.cpus} MKL_NUM_THREADS=${task.cpus} OPENBLAS_NUM_THREADS=${task.cpus} NUMBA_NUM_THREADS=${task.cpus}

    senca cluster \\
        --embeddings ${embeddings} \\
        --spots ${spots} \\
        --h5ad ${h5ad} \\
        ${image_arg} \\
        ${args} \\
        --outdir .

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        senca: \$(senca --version | sed 's/senca, version //')
    END_VERSIONS
    """

    stub:
    """
    touch ${meta.id}.clusters.parquet ${meta.id}.senca.h5ad ${meta.id}.clusters.png ${meta.id}.umap.png ${meta.id}.dendrogram.png

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        senca: \$(senca --version | sed 's/senca, version //')
    END_VERSIONS
    """
}
