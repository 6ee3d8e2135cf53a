process CLUSTER {
    tag "${meta.id}"
    label 'process_low'

    input:
    tuple val(meta), path(embeddings), path(spots), path(h5ad), path(image, stageAs: 'image/*')

    output:
    tuple val(meta), path("${prefix}.clusters.parquet"), emit: clusters
    tuple val(meta), path("${prefix}.senca.h5ad"), emit: h5ad
    tuple val(meta), path("${prefix}.clusters.png"), path("${prefix}.umap.png"), path("${prefix}.dendrogram.png"), emit: figures
    path "versions.yml", emit: versions

    script:
    def args = task.ext.args ?: ''
    prefix = task.ext.prefix ?: "${meta.id}"
    def image_arg = image ? "--image ${image}" : ''
    """
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
    prefix = task.ext.prefix ?: "${meta.id}"
    """
    touch ${prefix}.clusters.parquet ${prefix}.senca.h5ad ${prefix}.clusters.png ${prefix}.umap.png ${prefix}.dendrogram.png

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        senca: \$(senca --version | sed 's/senca, version //')
    END_VERSIONS
    """
}
